"""Warming the cache before connecting, off the event loop.

During a handshake the AIA fetch runs on the thread doing the handshake; for
asyncio that is the event-loop thread, which then stalls for the fetch (about
the AIA server's latency; see benchmarks: loop_block).  ``aprefetch()`` does a
throwaway verified handshake in a worker thread first, so the real connection
finds the issuers in the cache.  (OpenSSL 3's SSL_set_retry_verify cannot
help: CPython maps SSL_ERROR_WANT_RETRY_VERIFY to a fatal SSLError.)
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from .report import Report

__all__ = ["aprefetch", "prefetch"]


def _address(target: str) -> tuple[str, int]:
    if "://" in target:
        parts = urlsplit(target)
        if parts.scheme.lower() not in ("https", "wss") or not parts.hostname:
            raise ValueError(f"expected an https:// URL or host[:port], got {target!r}")
        return parts.hostname, parts.port or 443
    host, sep, port = target.rpartition(":")
    if sep and port.isdigit() and "]" not in port:
        return host.strip("[]"), int(port)
    return target.strip("[]"), 443


def prefetch(target: str, *, context: ssl.SSLContext | None = None,
             server_hostname: str | None = None, timeout: float = 30.0) -> Report | None:
    """Handshake with ``target`` to fill the AIA cache; its report, or None if not needed.

    ``context`` must be enabled (default: ``create_default_context()``).  A
    chain that does not verify raises ``ssl.SSLCertVerificationError`` here,
    before any application connection exists.
    """
    from .context import create_default_context, is_enabled
    from .report import report

    context = context or create_default_context()
    if not is_enabled(context):
        raise ValueError("prefetch needs an AIA-enabled context (aia_ext.enable())")
    host, port = _address(target)
    with socket.create_connection((host, port), timeout=timeout) as raw, \
            context.wrap_socket(raw, server_hostname=server_hostname or host) as tls:
        return report(tls)


async def aprefetch(target: str, *, context: ssl.SSLContext | None = None,
                    server_hostname: str | None = None, timeout: float = 30.0) -> Report | None:
    """``prefetch()`` in a worker thread, so the event loop never waits on a fetch."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(
        None, lambda: prefetch(target, context=context, server_hostname=server_hostname,
                               timeout=timeout))
