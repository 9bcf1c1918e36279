"""The asyncio fetcher: caIssuers GETs that never block an event loop (issue 22).

The same fetch as fetch.py, with every blocking step awaited instead: the
same URL policy (policy.py), hop planning and proxy rules (``fetch.hop_for``),
destination checks on every resolved address and a connection to the checked
address itself (addresses.py), the same strict and bounded HTTP reader (h11,
``http1.reader``), the same redirect and deadline rules, the same cache entries
and the same single flight as the threaded path (cache.py), so a thread and a
task needing one URL cause one request.  A user ``fetcher`` (a blocking
callable) runs in the loop's default executor.

Cancelling the task closes its socket at once and stores nothing: the flight
lands empty and waiters fetch for themselves.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

from ..errors import FetchError
from ..logtext import escape, get_logger
from ..stdlib_ssl import new_plain_context
from . import addresses, http1
from .cache import CacheEntry, current
from .core import entry_from_body, failed_entry, internal_error_entry
from .fetch import (
    Hop,
    connect_failure,
    describe,
    hop_for,
    note_destination,
    private_destinations,
    remaining,
)
from .policy import check_url

if TYPE_CHECKING:
    from ..options import Options

log = get_logger(__name__)


async def entry_for(url: str, options: Options, deadline_at: float) -> tuple[CacheEntry, str]:
    """The cache entry for ``url`` (memory cache, a flight under way, or a fetch), and
    where it came from: "memory cache" or "network"."""
    entry = current().get(url)
    if entry is not None:
        return entry, "memory cache"
    left = max(deadline_at - time.monotonic(), 0.0)
    entry, _ = await current().get_or_fetch_async(
        url, lambda: _network_entry(url, options, deadline_at), left)
    return entry, "network"


async def _network_entry(url: str, options: Options, deadline_at: float) -> CacheEntry:
    started = time.monotonic()
    reached: list[str] = []
    token = private_destinations.set(reached)
    try:
        body = await fetch_url(url, options, deadline_at)
    except FetchError as exc:
        return failed_entry(url, exc, started)
    except Exception as exc:  # noqa: BLE001 - a bug on this path fails this URL, closed
        return internal_error_entry(url, exc, started)
    finally:
        private_destinations.reset(token)
    return entry_from_body(url, body, started, reached)


async def fetch_url(url: str, options: Options, deadline_at: float) -> bytes:
    """GET ``url`` under ``options``; the body, or FetchError with the reason."""
    fetch_deadline = min(deadline_at, time.monotonic() + options.timeout)
    if options.fetcher is not None:
        return await _custom_fetch(url, options, fetch_deadline)
    current = url
    for _hop_number in range(options.max_redirects + 1):
        check_url(current, options)
        try:
            response = await asyncio.wait_for(_one_hop(current, options, fetch_deadline),
                                              remaining(fetch_deadline))
        except asyncio.TimeoutError:
            raise FetchError("timeout", "no response before the deadline") from None
        if response.status == 200:
            return response.body
        if response.status not in http1.REDIRECTS:
            raise FetchError(f"HTTP {response.status}", escape(response.reason, 80))
        if not response.location:
            raise FetchError(f"HTTP {response.status}", "redirect without Location")
        try:
            current = urljoin(current, response.location)
            urlsplit(current).port  # noqa: B018 - raises ValueError for a bad port
        except ValueError:
            raise FetchError("bad redirect",
                             f"malformed Location {escape(response.location, 120)!r}") from None
        log.debug("caIssuers %s redirected (%d) to %s", escape(url), response.status,
                  escape(current))
    raise FetchError("too many redirects", f"more than {options.max_redirects}")


async def _one_hop(url: str, options: Options, deadline_at: float) -> http1.Response:
    hop = hop_for(url, options)
    reader, writer = await _connect(hop, options)
    try:
        conn, data = http1.request(hop.request_target, hop.host_header)
        writer.write(data)
        await writer.drain()
        steps = http1.reader(conn, options.max_response_bytes)
        size = next(steps)
        while True:
            chunk = await reader.read(size)
            try:
                size = steps.send(chunk)
            except StopIteration as done:
                response: http1.Response = done.value
                return response
    except ssl.SSLError as exc:
        raise FetchError("TLS error", str(exc)) from None
    except OSError as exc:
        raise FetchError("connection error", str(exc)) from None
    finally:
        writer.close()


async def _connect(hop: Hop, options: Options) -> tuple[asyncio.StreamReader,
                                                        asyncio.StreamWriter]:
    """Resolve once, refuse forbidden addresses, connect to an allowed one (fetch._connect)."""
    literal = _literal_address(hop.connect_host, hop.connect_port)
    if literal is not None:
        # An address needs no resolver, and the loop's resolver is a thread
        # hop (its first use in a loop starts the executor): a few ms saved
        # on the first request's fetch (issue 22's first-request figure).
        infos = [literal]
    else:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                hop.connect_host, hop.connect_port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            raise connect_failure(hop, "DNS error", str(exc)) from None
    tls = None
    if hop.tls_server_name is not None:
        # A context no injection has touched: an https fetch must not chase
        # AIA itself (docs/design.md, "Fetch policy").
        tls = new_plain_context(ssl.PROTOCOL_TLS_CLIENT)
        tls.load_default_certs()
    refusals = []
    last_error: OSError | None = None
    for family, _kind, _proto, _name, sockaddr in infos:
        # A proxy is the user's own configuration, not certificate input.
        if not hop.via_proxy:
            refusal = addresses.refusal(str(sockaddr[0]), options.allow_private)
            if refusal is not None:
                refusals.append(refusal)
                continue
        try:
            # The checked address itself, so a second resolution cannot swap it.
            streams = await asyncio.open_connection(
                str(sockaddr[0]), int(sockaddr[1]), family=family, ssl=tls,
                server_hostname=hop.tls_server_name if tls is not None else None)
            if not hop.via_proxy:
                note_destination(str(sockaddr[0]), options)
            return streams
        except ssl.SSLError as exc:
            raise FetchError("TLS error", str(exc)) from None
        except OSError as exc:
            last_error = exc
    if refusals and last_error is None:
        raise FetchError(refusals[0])
    raise connect_failure(hop, "connection error",
                          describe(last_error) if last_error else "no address")


def _literal_address(host: str, port: int) -> tuple[Any, ...] | None:
    """getaddrinfo()'s row for an IP address literal (fetch.hop_for canonicalised it)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if address.version == 4:
        return (socket.AF_INET, socket.SOCK_STREAM, 0, "", (str(address), port))
    return (socket.AF_INET6, socket.SOCK_STREAM, 0, "", (str(address), port, 0, 0))


async def _custom_fetch(url: str, options: Options, fetch_deadline: float) -> bytes:
    """A user ``fetcher``, off the loop: the same checks as the threaded path."""
    from .fetch import custom_fetch

    loop = asyncio.get_running_loop()
    try:
        return await asyncio.wait_for(
            loop.run_in_executor(None, custom_fetch, url, options, fetch_deadline),
            remaining(fetch_deadline))
    except asyncio.TimeoutError:
        raise FetchError("timeout", "fetcher did not return before the deadline") from None
