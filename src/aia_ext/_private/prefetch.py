"""Warming the cache before connecting, off the event loop.

During a handshake the AIA fetch runs on the thread doing the handshake; for
asyncio that is the event-loop thread, which then stalls for the fetch (about
the AIA server's latency; see benchmarks: loop_block).  ``aprefetch()`` does a
throwaway verified handshake in a worker thread first, so the real connection
finds the issuers in the cache.  (OpenSSL 3's SSL_set_retry_verify cannot
help: CPython maps SSL_ERROR_WANT_RETRY_VERIFY to a fatal SSLError.)
"""

from __future__ import annotations

import socket
import ssl
from typing import TYPE_CHECKING

from .api import create_default_context, is_enabled
from .report import report
from .targets import parse_host_port

if TYPE_CHECKING:
    from .report import Report


def prefetch(target: str, *, context: ssl.SSLContext | None = None,
             server_hostname: str | None = None, timeout: float = 30.0) -> Report | None:
    """Handshake with ``target`` to fill the AIA cache; its report, or None if not needed.

    ``target`` is an ``https://`` (or ``wss://``) URL or ``host[:port]``.
    ``context`` must be enabled (default: ``create_default_context()``).  A
    chain that does not verify raises ``ssl.SSLCertVerificationError`` here,
    before any application connection exists.

    :raises ValueError: ``target`` is not a URL or host, or ``context`` is not enabled.
    """
    context = context or create_default_context()
    if not is_enabled(context):
        raise ValueError("prefetch needs an AIA-enabled context (aia_ext.enable())")
    host, port = parse_host_port(target, schemes=("https", "wss"))
    with socket.create_connection((host, port), timeout=timeout) as raw, \
            context.wrap_socket(raw, server_hostname=server_hostname or host) as tls:
        return report(tls)


async def aprefetch(target: str, *, context: ssl.SSLContext | None = None,
                    server_hostname: str | None = None, timeout: float = 30.0) -> Report | None:
    """``prefetch()`` in a worker thread, so the event loop never waits on a fetch."""
    import asyncio  # only for callers that are already in asyncio

    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(
        None, lambda: prefetch(target, context=context, server_hostname=server_hostname,
                               timeout=timeout))
