"""aiohttp integration (optional: ``pip install 'aia-ext[aiohttp]'``).

    import aiohttp
    from aia_ext.aiohttp import AIAConnector

    async with aiohttp.ClientSession(connector=AIAConnector()) as session:
        async with session.get("https://example.com/") as response:
            ...

A missing intermediate is fetched by aia_ext's asyncio fetcher while the event
loop keeps running, and the connection is made again; the loop never waits on
a fetch (docs/usage.md, "asyncio").
"""

from __future__ import annotations

import ssl as _ssl
from typing import TYPE_CHECKING, Any

import aiohttp

from ._private.aio import connect
from ._private.api import create_default_context_with, enable_given
from ._private.options import NAMES as OPTION_NAMES
from ._private.options import make_options

if TYPE_CHECKING:
    from aiohttp.client_reqrep import ClientRequest
    from aiohttp.connector import Connection

__all__ = ["AIAConnector"]


class AIAConnector(aiohttp.TCPConnector):
    """A ``TCPConnector`` whose TLS connections complete chains off the event loop.

    ``ssl`` defaults to ``aia_ext.create_default_context()``; a given
    ``ssl.SSLContext`` is enabled in place (one already enabled keeps its
    options unless some are given).  aia_ext's options are keyword arguments
    (``AIAConnector(timeout=3, cache_dir=...)``), the rest are
    ``aiohttp.TCPConnector``'s.  A request's own ``ssl=`` context is used as
    given.
    """

    def __init__(self, *, ssl: _ssl.SSLContext | bool | None = None, **kwargs: Any) -> None:
        given = {name: kwargs.pop(name) for name in list(kwargs) if name in OPTION_NAMES}
        context: _ssl.SSLContext | None
        if ssl is None or ssl is True:
            context = create_default_context_with(_ssl.Purpose.SERVER_AUTH, None, None, None,
                                                  make_options(given))
        elif ssl is False:
            context = None
        else:
            context = enable_given(ssl, given)
        #: The context this connector's TLS connections use (None: ssl=False).
        self.aia_context = context
        super().__init__(ssl=context if context is not None else False, **kwargs)

    async def connect(self, req: ClientRequest, traces: Any, timeout: Any) -> Connection:
        context = req.ssl if isinstance(req.ssl, _ssl.SSLContext) else self.aia_context
        if context is None or not req.is_ssl():
            return await super().connect(req, traces, timeout)
        return await connect(lambda: super(AIAConnector, self).connect(req, traces, timeout),
                             context)
