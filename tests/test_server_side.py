"""Issue 20: a server-side context keeps OpenSSL's client-certificate verification.

Every test runs real mutual-TLS handshakes on 127.0.0.1, under both engines
and for each way a server context reaches aia_ext (``aia_ext.SSLContext``,
``create_default_context(Purpose.CLIENT_AUTH)``, a plain context created under
``inject_into_ssl()``), and compares what the server saw with what a plain
``ssl`` server sees in the same exchange: whether the handshake completed,
the verify code or reason of its failure, and ``getpeercert()``.  A client
certificate's caIssuers URL is never fetched by a server (no opt-in exists).
"""

from __future__ import annotations

import socket
import ssl
import sys
import threading
from dataclasses import dataclass
from typing import Any, Callable

import pytest
from cryptography.x509.oid import ExtendedKeyUsageOID

import aia_ext
from aia_ext._private.testing import AIAServer, Cert, issue, write_pem

from .helpers import unique_path

CLIENT_AUTH = [ExtendedKeyUsageOID.CLIENT_AUTH]
HOW = ("SSLContext", "create_default_context", "injected")


@dataclass(frozen=True)
class Outcome:
    """What the server saw of one client."""

    completed: bool
    code: int | None = None  # the server's verify code when verification failed
    reason: str | None = None  # the ssl error's reason (e.g. PEER_DID_NOT_RETURN_A_CERTIFICATE)
    subject: Any = None  # getpeercert()["subject"], or None


@dataclass
class PKI:
    server: Cert
    server_root: Cert
    client_root: Cert
    trusted: Cert  # issued by client_root directly
    untrusted: Cert  # issued by a CA nobody trusts
    needs_aia: Cert  # issued by an intermediate the client does not send; names it by AIA
    aia_path: str
    files: dict[str, str]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory, aia: AIAServer) -> PKI:
    tmp = tmp_path_factory.mktemp("mtls")
    server_root = issue("mTLS server root", ca=True)
    server = issue("localhost", server_root, dns=["localhost"], ips=["127.0.0.1"])
    client_root = issue("mTLS client root", ca=True)
    other_root = issue("Nobody's root", ca=True)
    intermediate = issue("mTLS client intermediate", client_root, ca=True)
    path = unique_path()
    aia.serve(path, intermediate.der)
    files = {
        "server_chain": write_pem(tmp / "server.pem", server),
        "server_key": str(tmp / "server.key"),
        "server_root": write_pem(tmp / "server-root.pem", server_root),
        "client_root": write_pem(tmp / "client-root.pem", client_root),
    }
    (tmp / "server.key").write_bytes(server.key_pem)
    pki = PKI(server, server_root, client_root,
              issue("trusted client", client_root, extended_key_usage=CLIENT_AUTH),
              issue("untrusted client", other_root, extended_key_usage=CLIENT_AUTH),
              issue("client with AIA", intermediate, aia=[aia.url(path)],
                    extended_key_usage=CLIENT_AUTH),
              path, files)
    for name in ("trusted", "untrusted", "needs_aia"):
        cert: Cert = getattr(pki, name)
        (tmp / f"{name}.key").write_bytes(cert.key_pem)
        files[name] = write_pem(tmp / f"{name}.pem", cert)
        files[f"{name}_key"] = str(tmp / f"{name}.key")
    return pki


def server_context(how: str, pki: PKI, mode: ssl.VerifyMode) -> ssl.SSLContext:
    if how == "plain":
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    elif how == "SSLContext":
        ctx = aia_ext.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    elif how == "create_default_context":
        ctx = aia_ext.create_default_context(ssl.Purpose.CLIENT_AUTH,
                                             cafile=pki.files["client_root"])
    else:
        aia_ext.inject_into_ssl()
        try:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        finally:
            aia_ext.extract_from_ssl()
        assert aia_ext.is_enabled(ctx)
    ctx.load_cert_chain(pki.files["server_chain"], pki.files["server_key"])
    ctx.load_verify_locations(pki.files["client_root"])
    ctx.verify_mode = mode
    return ctx


def client_context(pki: PKI, certificate: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=pki.files["server_root"])
    if certificate is not None:
        ctx.load_cert_chain(pki.files[certificate], pki.files[f"{certificate}_key"])
    return ctx


def exchange(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext,
             after: Callable[[ssl.SSLSocket, ssl.SSLSocket], None] | None = None) -> Outcome:
    """One connection: the server's view of the handshake (and of ``after``)."""
    listener = socket.create_server(("127.0.0.1", 0))
    result: dict[str, Any] = {}
    server_side: list[ssl.SSLSocket] = []

    def serve() -> None:
        conn, _ = listener.accept()
        conn.settimeout(10)
        try:
            tls = server_ctx.wrap_socket(conn, server_side=True)
        except ssl.SSLCertVerificationError as exc:
            result["outcome"] = Outcome(False, exc.verify_code, exc.reason)
            conn.close()
        except (ssl.SSLError, OSError) as exc:
            result["outcome"] = Outcome(False, None, getattr(exc, "reason", type(exc).__name__))
            conn.close()
        else:
            server_side.append(tls)
            peer = tls.getpeercert()
            result["outcome"] = Outcome(True, subject=peer.get("subject") if peer else None)
        finally:
            result["ready"].set()

    result["ready"] = threading.Event()
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with socket.create_connection(listener.getsockname(), timeout=10) as raw:
            try:
                client = client_ctx.wrap_socket(raw, server_hostname="localhost")
            except (ssl.SSLError, OSError):
                client = None
            if client is not None:
                try:
                    # TLS 1.3: the server's verdict arrives after the client's
                    # handshake returned; a read surfaces it.
                    client.sendall(b"ping")
                    if result["ready"].wait(10) and server_side and after is not None:
                        after(client, server_side[0])
                except (ssl.SSLError, OSError):
                    pass
                except RuntimeError:
                    # PyPy 3.11's _ssl, formatting the server's alert under
                    # OpenSSL 3.5 (ERR_reason_error_string gives NULL), raises
                    # this instead of SSLError; plain ssl alike.  The verdict
                    # judged here is the server's, recorded above.
                    if sys.implementation.name != "pypy":
                        raise
                client.close()
        thread.join(10)
    finally:
        listener.close()
        for tls in server_side:
            tls.close()
    outcome: Outcome = result["outcome"]
    return outcome


CASES = [
    # (client certificate, verify mode)
    (None, ssl.CERT_REQUIRED),
    (None, ssl.CERT_OPTIONAL),
    ("trusted", ssl.CERT_REQUIRED),
    ("trusted", ssl.CERT_OPTIONAL),
    ("untrusted", ssl.CERT_REQUIRED),
    ("untrusted", ssl.CERT_OPTIONAL),
    ("needs_aia", ssl.CERT_REQUIRED),
    ("needs_aia", ssl.CERT_OPTIONAL),
]


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize(("certificate", "mode"), CASES)
def test_the_server_judges_client_certificates_as_plain_ssl(how, certificate, mode, pki, aia):
    before = aia.hits[pki.aia_path]
    expected = exchange(server_context("plain", pki, mode), client_context(pki, certificate))
    got = exchange(server_context(how, pki, mode), client_context(pki, certificate))
    assert got == expected
    # A client's certificate never makes a server fetch (docs/security.md).
    assert aia.hits[pki.aia_path] == before


def test_the_expected_verdicts(pki):
    """What plain ssl itself says, so that equality above means what it should."""
    required = ssl.CERT_REQUIRED
    assert exchange(server_context("plain", pki, required), client_context(pki, None)) \
        == Outcome(False, None, "PEER_DID_NOT_RETURN_A_CERTIFICATE")
    trusted = exchange(server_context("plain", pki, required), client_context(pki, "trusted"))
    assert trusted.completed and trusted.subject == ((("commonName", "trusted client"),),)
    assert exchange(server_context("plain", pki, required),
                    client_context(pki, "untrusted")).code == 20
    assert exchange(server_context("plain", pki, required),
                    client_context(pki, "needs_aia")).code == 20


@pytest.mark.parametrize("how", ("plain", *HOW))
@pytest.mark.parametrize("certificate", ["trusted", "untrusted", None])
def test_post_handshake_authentication(how, certificate, pki):
    """TLS 1.3 post-handshake authentication: the server asks after the handshake."""
    server_ctx = server_context(how, pki, ssl.CERT_REQUIRED)
    server_ctx.post_handshake_auth = True
    client_ctx = client_context(pki, certificate)
    client_ctx.post_handshake_auth = True
    client_ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    seen: dict[str, Any] = {}

    def after(client: ssl.SSLSocket, server: ssl.SSLSocket) -> None:
        assert server.recv(4) == b"ping"
        seen["before"] = server.getpeercert()
        server.verify_client_post_handshake()
        server.sendall(b"x")  # carries the CertificateRequest
        assert client.recv(1) == b"x"
        client.sendall(b"pong")  # carries the client's Certificate (or none)
        try:
            seen["data"] = server.recv(4)
            seen["after"] = server.getpeercert()
        except ssl.SSLError as exc:
            seen["error"] = getattr(exc, "verify_code", None) or exc.reason

    outcome = exchange(server_ctx, client_ctx, after)
    assert outcome.completed and outcome.subject is None
    assert not seen["before"]
    if certificate == "trusted":
        assert seen["data"] == b"pong"
        assert seen["after"]["subject"] == ((("commonName", "trusted client"),),)
    elif certificate == "untrusted":
        assert seen["error"] == 20
    else:
        assert seen["error"] == "PEER_DID_NOT_RETURN_A_CERTIFICATE"


def test_a_server_context_never_switches_openssl_verification_off(pki):
    """The fallback used to set OpenSSL's verify mode to CERT_NONE on every context it
    enabled, so server sockets stopped asking for certificates."""
    for how in HOW:
        ctx = server_context(how, pki, ssl.CERT_REQUIRED)
        assert ctx.verify_mode == ssl.CERT_REQUIRED
        # What OpenSSL itself holds, past any property a subclass defines.
        assert ssl.SSLContext.__mro__[1].verify_mode.__get__(ctx) == ssl.CERT_REQUIRED
