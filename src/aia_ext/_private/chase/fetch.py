"""The built-in HTTP client for caIssuers URLs: a GET over a socket we control, parsed by h11.

Everything about it is bounded because the URL is attacker input
(docs/design.md, invariant 5):

- time: one absolute deadline per fetch, min(timeout, what is left of the
  verification's deadline), enforced on every connect, send and receive, so
  a server dripping one byte a second cannot stretch it;
- bytes: http1.py bounds the head, the body (``max_response_bytes``) and the
  raw bytes read, chunked framing included, and refuses malformed framing;
- redirects: at most ``max_redirects``, each hop re-checked by the URL policy,
  a malformed ``Location`` being a failure of that URL;
- destination: the host is resolved once, each address is checked
  (addresses.py), and the connection goes to the checked address itself (no
  second lookup that DNS rebinding could answer differently).  Through an
  ``http_proxy``, a literal address in the URL, in any form the resolver
  accepts, gets the same checks; a host name is resolved by the proxy, so
  only the names in ``addresses.METADATA_NAMES`` and ``localhost`` are
  refused here (docs/security.md, "Destinations");
- content coding: only identity is accepted, so a gzip bomb is never inflated.

No cookies, credentials or client certificates are ever sent.  Proxies come
from ``http_proxy`` / ``no_proxy`` in the environment, read the way curl and
requests read them; an https caIssuers URL is never sent through a proxy.
"""

from __future__ import annotations

import os
import socket
import ssl
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import NamedTuple
from urllib.parse import urljoin, urlsplit

from ..errors import FetchError
from ..logtext import escape, get_logger
from ..options import Options
from ..stdlib_ssl import new_plain_context
from . import addresses, http1
from .policy import check_url

log = get_logger(__name__)

#: While a fetch runs: what ``allow_private=False`` would have refused among the
#: destinations it reached (allowed because the fetching context allows private
#: ones).  The answer keeps the first, so a context that does not allow them
#: refuses the cached answer as it would the fetch (issue 32, item 6).
private_destinations: ContextVar[list[str] | None] = ContextVar(
    "aia_ext_private_destinations", default=None)


def note_destination(address: str, options: Options) -> None:
    """Record ``address`` (reached, or about to be through a proxy) if it is private."""
    found = private_destinations.get()
    if found is not None and options.allow_private:
        refusal = addresses.refusal(address, False)
        if refusal is not None:
            found.append(refusal)


def describe(exc: OSError) -> str:
    """An OS error as its errno's text ("Connection refused"), the same whichever
    fetcher (threads or asyncio, which words its own) met it."""
    return os.strerror(exc.errno) if exc.errno else str(exc)


def remaining(deadline_at: float) -> float:
    left = deadline_at - time.monotonic()
    if left <= 0:
        raise FetchError("timeout", "fetch deadline reached")
    return left


class Hop(NamedTuple):
    """Where to connect for one request, and what to ask for."""

    connect_host: str
    connect_port: int
    request_target: str  # origin-form, or absolute-form through a proxy
    host_header: str
    tls_server_name: str | None  # None: plain http
    via_proxy: bool


def hop_for(url: str, options: Options) -> Hop:
    parts = urlsplit(url)
    host = parts.hostname or ""
    # One spelling of the address for every check and for the connection
    # itself: "169.254.169.254." and "2852039166" are the metadata address
    # to a resolver or a WHATWG proxy as much as the dotted form is (issue 26).
    literal = addresses.literal_ipv4(host)
    tls = parts.scheme.lower() == "https"
    port = parts.port or (443 if tls else 80)
    host_header = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        host_header += f":{parts.port}"
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    proxy = None if tls else _proxy_for(url, host)
    if proxy is None:
        connect = str(literal) if literal is not None else host
        return Hop(connect, port, path, host_header, host if tls else None, False)
    _check_proxied_host(host, options)
    proxy_parts = urlsplit(proxy if "://" in proxy else "http://" + proxy)
    try:
        proxy_port = proxy_parts.port or 8080
    except ValueError:
        proxy_port = 0
    if proxy_parts.scheme.lower() != "http" or not proxy_parts.hostname or not proxy_port:
        raise FetchError("proxy error", f"unsupported http_proxy {escape(proxy)!r}")
    # The absolute form of the request target is what a forward proxy expects
    # (RFC 9112 section 3.2.2).  Proxy credentials are never sent either.
    return Hop(proxy_parts.hostname, proxy_port, f"http://{host_header}{path}", host_header,
                None, True)


def _proxy_for(url: str, host: str) -> str | None:
    import urllib.request  # only on the (rare) fetch path: it is slow to import

    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(urlsplit(url).scheme.lower())
    # proxy_bypass_environment reads no_proxy as curl and requests do; typeshed
    # does not declare it.
    bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]
    if not proxy or bypass(host, proxies):
        return None
    return proxy


def _check_proxied_host(host: str, options: Options) -> None:
    """The destination checks that can be made without resolving ``host`` here.

    A literal address, in every form getaddrinfo or a WHATWG URL parser
    accepts (dotted, decimal, octal, hex, short, a trailing dot, IPv6 with a
    zone), is judged exactly as a resolved one.
    """
    literal = addresses.literal_ipv4(host)
    if literal is not None:
        refusal = addresses.refusal(str(literal), options.allow_private)
        if refusal is not None:
            raise FetchError(refusal)
        note_destination(str(literal), options)
        return
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM,
                                   flags=socket.AI_NUMERICHOST)
    except (OSError, UnicodeError):
        infos = []  # a name: the proxy resolves it
    for info in infos:
        refusal = addresses.refusal(str(info[4][0]), options.allow_private)
        if refusal is not None:
            raise FetchError(refusal)
        note_destination(str(info[4][0]), options)
    if infos:
        return
    name = addresses.canonical_host(host)
    if name in addresses.METADATA_NAMES:
        raise FetchError(f"refused by policy: {escape(name)} names a cloud metadata endpoint")
    if name == "localhost" or name.endswith(".localhost"):
        # RFC 6761: localhost names the loopback, whoever resolves it.
        if not options.allow_private:
            raise FetchError("refused by policy: localhost through a proxy (allow_private=False)")
        note_destination("127.0.0.1", options)


def connect_failure(hop: Hop, reason: str, detail: str) -> FetchError:
    """A failure to reach the hop's server: through an http_proxy, the proxy is named, as
    it is what could not be reached, not the caIssuers URL (issue 32, item 4)."""
    if hop.via_proxy:
        return FetchError("proxy error", f"the http_proxy {escape(hop.connect_host)}:"
                                         f"{hop.connect_port} could not be reached "
                                         f"({reason}: {detail})")
    return FetchError(reason, detail)


def _connect(hop: Hop, options: Options, deadline_at: float) -> socket.socket:
    """Resolve once, refuse forbidden addresses, connect to an allowed one."""
    try:
        infos = socket.getaddrinfo(hop.connect_host, hop.connect_port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise connect_failure(hop, "DNS error", str(exc)) from None
    refusals = []
    last_error: OSError | None = None
    for family, kind, proto, _name, sockaddr in infos:
        # A proxy is the user's own configuration, not certificate input.
        if not hop.via_proxy:
            refusal = addresses.refusal(str(sockaddr[0]), options.allow_private)
            if refusal is not None:
                refusals.append(refusal)
                continue
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(min(options.timeout, remaining(deadline_at)))
            sock.connect(sockaddr)
            if not hop.via_proxy:
                note_destination(str(sockaddr[0]), options)
            return sock
        except socket.timeout:
            sock.close()
            raise connect_failure(hop, "timeout", "connect") from None
        except OSError as exc:
            sock.close()
            last_error = exc
    if refusals and last_error is None:
        raise FetchError(refusals[0])
    raise connect_failure(hop, "connection error",
                          describe(last_error) if last_error else "no address")


def _one_hop(url: str, options: Options, deadline_at: float,
             progress: Callable[[int], None] | None = None,
             tls: ssl.SSLContext | None = None) -> http1.Response:
    hop = hop_for(url, options)
    received = 0
    sock = _connect(hop, options, deadline_at)
    try:
        if hop.tls_server_name is not None:
            # A context no injection has touched: an https fetch must not chase
            # AIA itself (docs/design.md, "Fetch policy").
            context = tls
            if context is None:
                context = new_plain_context(ssl.PROTOCOL_TLS_CLIENT)
                context.load_default_certs()
            sock.settimeout(remaining(deadline_at))
            sock = context.wrap_socket(sock, server_hostname=hop.tls_server_name)

        def send(data: bytes) -> None:
            sock.settimeout(remaining(deadline_at))
            sock.sendall(data)

        def recv(size: int) -> bytes:
            nonlocal received
            sock.settimeout(remaining(deadline_at))
            data = sock.recv(size)
            if progress is not None:
                received += len(data)
                progress(received)
            return data

        return http1.exchange(send, recv, hop.request_target, hop.host_header,
                              options.max_response_bytes)
    except socket.timeout:
        raise FetchError("timeout", "no data before the deadline") from None
    except ssl.SSLError as exc:
        raise FetchError("TLS error", str(exc)) from None
    except OSError as exc:
        raise FetchError("connection error", str(exc)) from None
    finally:
        sock.close()


def fetch_url(url: str, options: Options, deadline_at: float,
              progress: Callable[[int], None] | None = None,
              tls: ssl.SSLContext | None = None) -> bytes:
    """GET ``url`` under ``options``; the body, or FetchError with the reason.

    ``deadline_at`` is the verification's absolute deadline (time.monotonic());
    this fetch also stops at ``options.timeout`` from now.  ``progress`` is
    called with the bytes received so far, and ``tls`` (a plain context)
    verifies https servers instead of the system store (both for ``aia-ext
    intermediates update``).
    """
    fetch_deadline = min(deadline_at, time.monotonic() + options.timeout)
    if options.fetcher is not None:
        return custom_fetch(url, options, fetch_deadline)
    current = url
    for _hop_number in range(options.max_redirects + 1):
        check_url(current, options)
        response = _one_hop(current, options, fetch_deadline, progress, tls)
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


def custom_fetch(url: str, options: Options, fetch_deadline: float) -> bytes:
    """A user ``fetcher`` under the same URL policy, size cap and cache."""
    check_url(url, options)
    assert options.fetcher is not None
    try:
        body = options.fetcher(url, remaining(fetch_deadline))
    except FetchError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of user code is a failed fetch
        raise FetchError("fetcher error", f"{type(exc).__name__}: {escape(exc, 200)}") from None
    if not isinstance(body, (bytes, bytearray, memoryview)):
        raise FetchError("fetcher error", f"returned {type(body).__name__}, not bytes")
    # Bytes, whatever the buffer's item size (a memoryview cast to "Q" has
    # len() of an eighth of its bytes).
    size = memoryview(body).nbytes
    if size > options.max_response_bytes:
        raise FetchError("too large", f"body of {size} bytes exceeds {options.max_response_bytes}")
    if time.monotonic() > fetch_deadline:
        raise FetchError("timeout", "fetcher returned after the deadline")
    return memoryview(body).tobytes()
