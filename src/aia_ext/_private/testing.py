"""A throwaway test PKI and loopback servers: the demo's, the tests' and the benchmarks'.

Shipped in the package because ``python -m aia_ext demo`` needs it; it is not
part of the public API.

Everything binds 127.0.0.1 on an ephemeral port and needs no internet.  The
PKI is built with cryptography's builders, ECDSA P-256 by default so that
handshakes are cheap and any overhead of aia_ext shows.
"""

from __future__ import annotations

import datetime
import http.server
import ipaddress
import os
import socket
import ssl
import tempfile
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import urlsplit

from .errors import missing_cryptography

try:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID
except ImportError as exc:  # PyPy 3.10+ without the [cryptography] extra (issue 16)
    raise missing_cryptography("aia_ext's test lab (aia_ext.testing, the demo)", exc) from exc


PrivateKey = ec.EllipticCurvePrivateKey
_ONE_DAY = datetime.timedelta(days=1)


def new_key() -> PrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@dataclass(frozen=True)
class Cert:
    """A certificate with its private key."""

    cert: x509.Certificate
    key: PrivateKey

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @property
    def subject(self) -> str:
        return self.cert.subject.rfc4514_string()


def issue(
    common_name: str,
    issuer: Cert | None = None,
    *,
    ca: bool = False,
    path_length: int | None = None,
    aia: Sequence[str] = (),
    dns: Sequence[str] = (),
    ips: Sequence[str] = (),
    key: PrivateKey | None = None,
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
    extended_key_usage: Sequence[x509.ObjectIdentifier] | None = None,
    name_constraints: x509.NameConstraints | None = None,
    basic_constraints: bool = True,
    subject_key_id: bool = True,
    sign_with: PrivateKey | None = None,
) -> Cert:
    """Issue a certificate; self-signed when ``issuer`` is None.

    The defaults make certificates that pass Python 3.13's
    VERIFY_X509_STRICT: critical basicConstraints and keyUsage, SKI, and AKI
    on every non-root.  Keyword arguments exist to build broken ones;
    ``sign_with`` signs with another key than the issuer's (a bad signature
    behind a correct AKI).
    """
    key = key or new_key()
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    signer_key = issuer.key if issuer else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.cert.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - _ONE_DAY)
        .not_valid_after(not_after or now + 30 * _ONE_DAY)
    )
    if subject_key_id:
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    if basic_constraints:
        constraints = x509.BasicConstraints(ca, path_length if ca else None)
        builder = builder.add_extension(constraints, True)
    builder = builder.add_extension(
        x509.KeyUsage(
            digital_signature=not ca, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
            encipher_only=False, decipher_only=False,
        ),
        True,
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), False
        )
    if aia:
        builder = builder.add_extension(
            x509.AuthorityInformationAccess(
                [x509.AccessDescription(AuthorityInformationAccessOID.CA_ISSUERS,
                                        x509.UniformResourceIdentifier(u)) for u in aia]
            ),
            False,
        )
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), False)
    if extended_key_usage is None and not ca:
        extended_key_usage = [ExtendedKeyUsageOID.SERVER_AUTH]
    if extended_key_usage:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(extended_key_usage)), False)
    if name_constraints is not None:
        builder = builder.add_extension(name_constraints, True)
    return Cert(builder.sign(sign_with or signer_key, hashes.SHA256()), key)


# --------------------------------------------------------------------------
# The AIA HTTP server


@dataclass
class Route:
    """What the AIA server answers on one path."""

    body: bytes = b""
    status: int = 200
    content_type: str = "application/pkix-cert"
    headers: dict[str, str] = field(default_factory=dict)
    handler: Callable[[http.server.BaseHTTPRequestHandler], None] | None = None


class _AIAHandler(http.server.BaseHTTPRequestHandler):
    server: _AIAHTTPServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        owner = self.server.owner
        path = _route_key(self.path.split("?", 1)[0])
        owner._record(path, self)
        route = owner.routes.get(path)
        if route is None:
            route = Route(b"not found\n", 404, "text/plain")
        if route.handler is not None:
            route.handler(self)
            return
        self.send_response(route.status)
        self.send_header("Content-Type", route.content_type)
        self.send_header("Content-Length", str(len(route.body)))
        for name, value in route.headers.items():
            self.send_header(name, value)
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(route.body)
        self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the request log lives in AIAServer.requests


def _route_key(target: str) -> str:
    # An absolute URL with an empty path means "/" (RFC 9110 section 4.2.3).
    if "://" in target and target.count("/") == 2:
        return target + "/"
    return target


class _AIAHTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    owner: AIAServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients hang up on hostile routes on purpose


class AIAServer:
    """An HTTP server on 127.0.0.1 serving caIssuers responses by path.

    ``hits`` counts requests per path; ``requests`` keeps each request's
    method, path and headers, so tests can see exactly what was sent.  Given
    a server-side ``tls`` context it serves HTTPS instead.
    """

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.routes: dict[str, Route] = {}
        self.hits: Counter[str] = Counter()
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        #: For a TLS server: whether each request's client sent a certificate.
        self.client_certificates: list[bool] = []
        self._lock = threading.Lock()
        self._httpd = _AIAHTTPServer(("127.0.0.1", 0), _AIAHandler)
        self._httpd.owner = self
        self.scheme = "http"
        if tls is not None:
            self._httpd.socket = tls.wrap_socket(self._httpd.socket, server_side=True)
            self.scheme = "https"
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True,
                                        kwargs={"poll_interval": 0.05})

    def __enter__(self) -> AIAServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def url(self, path: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"

    def path_of(self, url: str) -> str:
        """The route path of one of this server's URLs (the key of ``hits``)."""
        return urlsplit(url).path

    def serve(self, path: str, body: bytes, **kwargs: Any) -> str:
        """Serve ``body`` at ``path``; returns the full URL.

        ``path`` may also be an absolute http URL: the server then answers it
        as a forward proxy would (clients send the absolute form to a proxy).
        """
        self.routes[_route_key(path)] = Route(body, **kwargs)
        return self.url(path) if path.startswith("/") else path

    def _record(self, path: str, handler: http.server.BaseHTTPRequestHandler) -> None:
        with self._lock:
            self.hits[path] += 1
            self.requests.append((handler.command, handler.path, dict(handler.headers.items())))
            if isinstance(handler.connection, ssl.SSLSocket):
                self.client_certificates.append(handler.connection.getpeercert() is not None
                                                and handler.connection.getpeercert() != {})

    @property
    def total_hits(self) -> int:
        with self._lock:
            return sum(self.hits.values())


# --------------------------------------------------------------------------
# The TLS server


class TLSServer:
    """A TLS server on 127.0.0.1 that serves a given chain and answers HTTP.

    Each connection: handshake, then answer every request head with "200 ok"
    (keep-alive) until the client closes or sends "Connection: close"; an
    HTTP/1.0 request is answered and the connection closed.
    ``chain`` is what the server sends: the leaf first, then whatever
    intermediates it is configured with (none, for the incomplete-chain case).
    """

    def __init__(self, leaf: Cert, chain: Iterable[Cert] = (), *, port: int = 0,
                 security_level: int | None = None) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="aia-ext-lab-")
        certfile = os.path.join(self._dir.name, "chain.pem")
        keyfile = os.path.join(self._dir.name, "key.pem")
        with open(certfile, "wb") as f:
            f.write(leaf.pem + b"".join(c.pem for c in chain))
        with open(keyfile, "wb") as f:
            f.write(leaf.key_pem)
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        if security_level is not None:  # to serve keys a client's level refuses
            self.context.set_ciphers(f"DEFAULT:@SECLEVEL={security_level}")
        self.context.load_cert_chain(certfile, keyfile)
        self.handshakes = Counter[str]()
        #: Application bytes received after each completed handshake, per
        #: connection: shows whether a client sent data on a connection.
        self.app_bytes: list[int] = []
        self._lock = threading.Lock()
        self._sock = socket.create_server(("127.0.0.1", port), backlog=256)
        self._sock.settimeout(0.1)
        self.port = int(self._sock.getsockname()[1])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)

    def __enter__(self) -> TLSServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()
        self._dir.cleanup()

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}/"

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except (socket.timeout, OSError):
                continue
            threading.Thread(target=self._serve_one, args=(conn,), daemon=True).start()

    def _count(self, outcome: str) -> None:
        with self._lock:
            self.handshakes[outcome] += 1

    def _serve_one(self, conn: socket.socket) -> None:
        conn.settimeout(30)
        # As real servers do: without it, the TLS 1.3 session tickets sent
        # after the handshake and the HTTP response meet Nagle's algorithm and
        # the client's delayed ACK, adding ~40 ms to every first request.
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            tls = self.context.wrap_socket(conn, server_side=True)
        except (OSError, ssl.SSLError):
            self._count("failed")
            conn.close()
            return
        self._count("ok")
        received = 0
        try:
            # HTTP/1.1 keep-alive, as real servers do, until the client closes
            # or asks to ("Connection: close").
            buffered = b""
            while True:
                while b"\r\n\r\n" not in buffered and len(buffered) < 65536:
                    data = tls.recv(4096)
                    if not data:
                        return
                    received += len(data)
                    buffered += data
                head, _, buffered = buffered.partition(b"\r\n\r\n")
                lowered = head.lower()
                # HTTP/1.0 closes after each response unless the client asked to
                # keep the connection (RFC 9112, section 9.3): a 1.0 client waiting
                # for the close must not wait out the idle timeout.
                old_client = lowered.split(b"\r\n", 1)[0].endswith(b"http/1.0")
                closing = (b"connection: close" in lowered
                           or (old_client and b"connection: keep-alive" not in lowered))
                tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                            b"Content-Length: 3\r\n"
                            + (b"Connection: close\r\n" if closing else b"")
                            + b"\r\nok\n")
                if closing:
                    return
        except (OSError, ssl.SSLError):
            pass
        finally:
            with self._lock:
                self.app_bytes.append(received)
            tls.close()


def write_pem(path: str | os.PathLike[str], *certs: Cert) -> str:
    """Write certificates as PEM to ``path``; returns the path as str."""
    with open(path, "wb") as f:
        f.write(b"".join(c.pem for c in certs))
    return os.fspath(path)
