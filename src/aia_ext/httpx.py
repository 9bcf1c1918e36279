"""httpx integration (optional: ``pip install 'aia-ext[httpx]'``).

    import httpx
    from aia_ext.httpx import AsyncAIATransport

    async with httpx.AsyncClient(transport=AsyncAIATransport()) as client:
        response = await client.get("https://example.com/")

``AsyncAIATransport`` fetches a missing intermediate with aia_ext's asyncio
fetcher while the event loop keeps running, and connects again; the loop never
waits on a fetch.  ``AIATransport`` is its synchronous twin (a blocking client
fetches inside the handshake, on its own thread).
"""

from __future__ import annotations

import os
import ssl
from typing import Any

import httpx

from ._private.aio import connect
from ._private.api import create_default_context_with, enable_given
from ._private.options import NAMES as OPTION_NAMES
from ._private.options import make_options

__all__ = ["AIATransport", "AsyncAIATransport"]


def _context(verify: Any, cert: Any, given: dict[str, Any]) -> ssl.SSLContext | bool:
    """httpx's ``verify`` (a context, True, or a CA bundle path; False) as a context."""
    if verify is False:
        return False
    context: ssl.SSLContext
    options = make_options(given)
    if isinstance(verify, ssl.SSLContext):
        context = enable_given(verify, given)
    elif verify is True:
        context = create_default_context_with(ssl.Purpose.SERVER_AUTH, None, None, None, options)
    else:
        path = os.fspath(verify)
        directory = os.path.isdir(path)
        context = create_default_context_with(ssl.Purpose.SERVER_AUTH,
                                              None if directory else path,
                                              path if directory else None, None, options)
    if cert:
        certfile, keyfile = (cert, None) if isinstance(cert, (str, os.PathLike)) else cert[:2]
        context.load_cert_chain(certfile, keyfile)
    return context


def _explained(exc: httpx.ConnectError, request: httpx.Request) -> httpx.ConnectError | None:
    """httpx's ConnectError for a chain aia_ext could not complete, saying why.

    httpx raises ``ConnectError`` with the ``ssl`` error's text only; the
    ``SSLCertVerificationError`` carrying the reason (its ``aia_report`` and
    note) sits two links down its chain, in a ``__context__`` that httpcore's
    ``raise ... from`` leaves out of the traceback (issue 32, item 3).  The
    reason goes into the message, a note (3.11+) and ``aia_report``.
    """
    seen: set[int] = set()
    error: BaseException | None = exc
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        report = getattr(error, "aia_report", None)
        if isinstance(error, ssl.SSLCertVerificationError) and report is not None:
            from ._private.records import explain

            reason = explain(report)
            better = type(exc)(f"{exc} ({reason})", request=request)
            better.aia_report = report  # type: ignore[attr-defined]
            add_note = getattr(better, "add_note", None)
            if add_note is not None:
                add_note(reason)
            return better
        error = error.__cause__ or error.__context__
    return None


def _split(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {name: kwargs.pop(name) for name in list(kwargs) if name in OPTION_NAMES}


class AsyncAIATransport(httpx.AsyncHTTPTransport):
    """An ``httpx.AsyncHTTPTransport`` completing chains off the event loop.

    ``verify`` is httpx's: an ``ssl.SSLContext`` (enabled in place; one already
    enabled keeps its options unless some are given), True for
    ``aia_ext.create_default_context()``, a CA bundle file or directory, or
    False.  aia_ext's options are keyword arguments; the rest go to httpx.
    """

    def __init__(self, verify: Any = True, cert: Any = None, **kwargs: Any) -> None:
        context = _context(verify, cert, _split(kwargs))
        self.aia_context = context if isinstance(context, ssl.SSLContext) else None
        super().__init__(verify=context, **kwargs)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.aia_context is None or request.url.scheme != "https":
            return await super().handle_async_request(request)
        try:
            return await connect(
                lambda: super(AsyncAIATransport, self).handle_async_request(request),
                self.aia_context)
        except httpx.ConnectError as exc:
            better = _explained(exc, request)
            if better is None:
                raise
            raise better from exc


class AIATransport(httpx.HTTPTransport):
    """An ``httpx.HTTPTransport`` whose context is AIA-enabled (``verify`` as httpx's)."""

    def __init__(self, verify: Any = True, cert: Any = None, **kwargs: Any) -> None:
        context = _context(verify, cert, _split(kwargs))
        self.aia_context = context if isinstance(context, ssl.SSLContext) else None
        super().__init__(verify=context, **kwargs)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return super().handle_request(request)
        except httpx.ConnectError as exc:
            better = _explained(exc, request)
            if better is None:
                raise
            raise better from exc
