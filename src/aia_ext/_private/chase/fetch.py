"""The built-in HTTP client for caIssuers URLs, on the standard library's http.client.

Everything about it is bounded because the URL is attacker input
(docs/design.md, invariant 5):

- time: one absolute deadline per fetch, min(timeout, what is left of the
  verification's deadline), enforced on every read, so a server dripping one
  byte a second cannot stretch it;
- size: ``max_response_bytes``, checked against Content-Length and again while
  reading, chunked bodies included;
- redirects: at most ``max_redirects``, each hop re-checked by the URL policy;
- destination: the host is resolved once, each address is checked, and the
  connection goes to the checked address itself (no second lookup that DNS
  rebinding could answer differently);
- content coding: only identity is accepted, so a gzip bomb is never inflated.

No cookies, credentials or client certificates are ever sent: the request has
exactly the headers written below.  Proxies come from ``http_proxy`` /
``no_proxy`` in the environment, read the way curl and requests read them.
"""

from __future__ import annotations

import http.client
import io
import logging
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

from ..errors import FetchError
from ..logtext import escape
from ..options import Options
from ..stdlib_ssl import new_plain_context
from .policy import address_refusal, check_url

log = logging.getLogger(__name__)

_ACCEPT = (
    "application/pkix-cert, application/pkcs7-mime, application/x-x509-ca-cert, "
    "application/x-pkcs7-certificates, application/x-pem-file;q=0.9, */*;q=0.1"
)
_USER_AGENT = "aia_ext (AIA caIssuers fetch)"
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_READ_CHUNK = 16 * 1024


def _remaining(deadline_at: float) -> float:
    left = deadline_at - time.monotonic()
    if left <= 0:
        raise FetchError("timeout", "fetch deadline reached")
    return left


class _DeadlineSocket:
    """The parts of a socket http.client uses, bounded by an absolute deadline.

    http.client reads through ``sock.makefile('rb')``; a plain socket timeout
    applies per recv and restarts with every byte that arrives, so it cannot
    bound a server that drips.  Like ``socket.makefile``, the reader holds a
    reference: http.client closes the connection as soon as a response says
    "Connection: close" and keeps reading the body through the reader.
    """

    def __init__(self, sock: socket.socket, deadline_at: float) -> None:
        self._sock = sock
        self._deadline_at = deadline_at
        self._refs = 1

    def sendall(self, data: bytes) -> None:
        self._sock.settimeout(_remaining(self._deadline_at))
        self._sock.sendall(data)

    def recv_into(self, buffer: Any) -> int:
        self._sock.settimeout(_remaining(self._deadline_at))
        try:
            return self._sock.recv_into(buffer)
        except socket.timeout:
            raise FetchError("timeout", "no data before the deadline") from None

    def makefile(self, mode: str) -> io.BufferedReader:
        self._refs += 1
        return io.BufferedReader(_Reader(self))

    def close(self) -> None:
        self._refs -= 1
        if self._refs <= 0:
            self._sock.close()


class _Reader(io.RawIOBase):
    def __init__(self, owner: _DeadlineSocket) -> None:
        super().__init__()
        self._owner: _DeadlineSocket | None = owner

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._owner is None:
            raise ValueError("I/O operation on closed reader")
        return self._owner.recv_into(buffer)

    def close(self) -> None:
        if self._owner is not None:
            owner, self._owner = self._owner, None
            owner.close()
        super().close()


@dataclass(frozen=True)
class _Target:
    """Where to connect for one hop: host/port to dial and the request target."""

    connect_host: str
    connect_port: int
    request_target: str
    host_header: str
    tls: bool
    tls_server_name: str
    via_proxy: bool


class _PinnedConnection(http.client.HTTPConnection):
    """An HTTPConnection that dials a pre-checked address under a deadline."""

    def __init__(self, target: _Target, options: Options, deadline_at: float) -> None:
        super().__init__(target.connect_host, target.connect_port)
        self._target = target
        self._options = options
        self._deadline_at = deadline_at

    def connect(self) -> None:
        sock = _open_checked_socket(self._target, self._options, self._deadline_at)
        if self._target.tls:
            # A context no injection has touched: an https fetch must not chase
            # AIA itself (docs/design.md, "Fetch policy").
            context = new_plain_context(ssl.PROTOCOL_TLS_CLIENT)
            context.load_default_certs()
            sock.settimeout(_remaining(self._deadline_at))
            sock = context.wrap_socket(sock, server_hostname=self._target.tls_server_name)
        self.sock = _DeadlineSocket(sock, self._deadline_at)


def _open_checked_socket(target: _Target, options: Options, deadline_at: float) -> socket.socket:
    """Resolve once, refuse forbidden addresses, connect to an allowed one."""
    try:
        infos = socket.getaddrinfo(
            target.connect_host, target.connect_port, type=socket.SOCK_STREAM
        )
    except (OSError, UnicodeError) as exc:
        raise FetchError("DNS error", str(exc)) from None
    refusals = []
    last_error: OSError | None = None
    for family, kind, proto, _name, sockaddr in infos:
        # A proxy is the user's own configuration, not certificate input.
        if not target.via_proxy:
            refusal = address_refusal(str(sockaddr[0]), options.allow_private)
            if refusal is not None:
                refusals.append(refusal)
                continue
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(min(options.timeout, _remaining(deadline_at)))
            sock.connect(sockaddr)
            return sock
        except socket.timeout:
            sock.close()
            raise FetchError("timeout", "connect") from None
        except OSError as exc:
            sock.close()
            last_error = exc
    if refusals and last_error is None:
        raise FetchError(refusals[0])
    raise FetchError("connection error", str(last_error) if last_error else "no address")


def _proxy_for(url: str, host: str) -> str | None:
    import urllib.request  # only on the (rare) fetch path: it is slow to import

    proxies = urllib.request.getproxies_environment()
    scheme = urlsplit(url).scheme.lower()
    proxy = proxies.get(scheme)
    # proxy_bypass_environment reads no_proxy as curl and requests do; typeshed
    # does not declare it.
    bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]
    if not proxy or bypass(host, proxies):
        return None
    return proxy


def _target(url: str) -> _Target:
    parts = urlsplit(url)
    host = parts.hostname or ""
    tls = parts.scheme.lower() == "https"
    port = parts.port or (443 if tls else 80)
    host_header = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        host_header += f":{parts.port}"
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    proxy = None if tls else _proxy_for(url, host)
    if proxy is not None:
        proxy_parts = urlsplit(proxy if "://" in proxy else "http://" + proxy)
        if proxy_parts.scheme.lower() != "http" or not proxy_parts.hostname:
            raise FetchError("proxy error", f"unsupported http_proxy {proxy!r}")
        # The absolute form of the request target is what a forward proxy expects
        # (RFC 9112 section 3.2.2).  Proxy credentials are never sent either.
        absolute = f"http://{host_header}{path}"
        return _Target(
            proxy_parts.hostname, proxy_parts.port or 8080, absolute, host_header,
            False, "", True,
        )
    return _Target(host, port, path, host_header, tls, host, False)


def _read_body(response: http.client.HTTPResponse, max_bytes: int) -> bytes:
    declared = response.getheader("Content-Length")
    length: int | None = None
    if declared is not None:
        try:
            length = int(declared)
        except ValueError:
            raise FetchError("bad HTTP response", "invalid Content-Length") from None
        if length > max_bytes:
            raise FetchError("too large", f"Content-Length {declared} > {max_bytes}")
    coding = (response.getheader("Content-Encoding") or "identity").strip().lower()
    if coding != "identity":
        raise FetchError("bad HTTP response", f"Content-Encoding {coding!r} refused")
    chunks = []
    total = 0
    while True:
        data = response.read(min(_READ_CHUNK, max_bytes + 1 - total))
        if not data:
            break
        total += len(data)
        if total > max_bytes:
            raise FetchError("too large", f"body exceeds {max_bytes} bytes")
        chunks.append(data)
    # http.client's read(amt) returns a short body quietly when the server
    # hangs up early; a truncated certificate must not reach the parser.
    if length is not None and total != length:
        raise FetchError("bad HTTP response", f"body of {total} bytes, Content-Length {length}")
    return b"".join(chunks)


def _one_hop(url: str, options: Options, deadline_at: float) -> tuple[int, str, bytes]:
    target = _target(url)
    conn = _PinnedConnection(target, options, deadline_at)
    try:
        conn.putrequest("GET", target.request_target, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", target.host_header)
        conn.putheader("Accept", _ACCEPT)
        conn.putheader("Accept-Encoding", "identity")
        conn.putheader("User-Agent", _USER_AGENT)
        conn.putheader("Connection", "close")
        conn.endheaders()
        response = conn.getresponse()
        status = response.status
        if status in _REDIRECTS:
            return status, response.getheader("Location") or "", b""
        if status != 200:
            raise FetchError(f"HTTP {status}", response.reason)
        return status, "", _read_body(response, options.max_response_bytes)
    except FetchError:
        raise
    except socket.timeout:
        raise FetchError("timeout", "reading the response") from None
    except ssl.SSLError as exc:
        raise FetchError("TLS error", str(exc)) from None
    except http.client.HTTPException as exc:
        raise FetchError("bad HTTP response", f"{type(exc).__name__}: {exc}") from None
    except OSError as exc:
        raise FetchError("connection error", str(exc)) from None
    finally:
        conn.close()


def fetch_url(url: str, options: Options, deadline_at: float) -> bytes:
    """GET ``url`` under ``options``; the body, or FetchError with the reason.

    ``deadline_at`` is the verification's absolute deadline (time.monotonic());
    this fetch also stops at ``options.timeout`` from now.
    """
    fetch_deadline = min(deadline_at, time.monotonic() + options.timeout)
    if options.fetcher is not None:
        return _custom_fetch(url, options, fetch_deadline)
    current = url
    for _hop in range(options.max_redirects + 1):
        check_url(current, options)
        status, location, body = _one_hop(current, options, fetch_deadline)
        if status == 200:
            return body
        if not location:
            raise FetchError(f"HTTP {status}", "redirect without Location")
        current = urljoin(current, location)
        log.debug("caIssuers %s redirected (%d) to %s", escape(url), status, escape(current))
    raise FetchError("too many redirects", f"more than {options.max_redirects}")


def _custom_fetch(url: str, options: Options, fetch_deadline: float) -> bytes:
    """A user ``fetcher`` under the same URL policy, size cap and cache."""
    check_url(url, options)
    assert options.fetcher is not None
    try:
        body = options.fetcher(url, _remaining(fetch_deadline))
    except FetchError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of user code is a failed fetch
        raise FetchError("fetcher error", f"{type(exc).__name__}: {exc}") from None
    if not isinstance(body, (bytes, bytearray, memoryview)):
        raise FetchError("fetcher error", f"returned {type(body).__name__}, not bytes")
    if len(body) > options.max_response_bytes:
        raise FetchError("too large", f"body exceeds {options.max_response_bytes} bytes")
    if time.monotonic() > fetch_deadline:
        raise FetchError("timeout", "fetcher returned after the deadline")
    return bytes(body)
