"""asyncio streams that complete incomplete chains without blocking the event loop.

    import aia_ext.asyncio

    reader, writer = await aia_ext.asyncio.open_connection("example.com", 443)

Like ``asyncio.open_connection``, with TLS by default: a missing intermediate
is fetched by aia_ext's asyncio fetcher while the loop keeps running, and the
connection is made again (docs/usage.md, "asyncio").
"""

from __future__ import annotations

import asyncio
import ssl as _ssl
from typing import Any

from ._private.aio import connect
from ._private.api import create_default_context

__all__ = ["open_connection"]


async def open_connection(host: str | None = None, port: int | None = None, *,
                          ssl: _ssl.SSLContext | bool | None = None,
                          server_hostname: str | None = None,
                          **kwargs: Any) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """``asyncio.open_connection()``, completing chains off the event loop.

    ``ssl``: None or True for ``aia_ext.create_default_context()``; an
    ``ssl.SSLContext`` (enable it with ``aia_ext.enable()`` for AIA); False
    for a plain TCP connection.  Other arguments are asyncio's.
    """
    if ssl is False:
        return await asyncio.open_connection(host, port, **kwargs)
    context = ssl if isinstance(ssl, _ssl.SSLContext) else create_default_context()
    return await connect(lambda: asyncio.open_connection(
        host, port, ssl=context, server_hostname=server_hostname, **kwargs), context)
