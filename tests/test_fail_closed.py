"""Issue 30: a connection's verification never rests on state that can vanish.

Each test drives the same calls twice, against the same real server on
127.0.0.1: once with plain ``ssl`` contexts, once with aia_ext's, and
compares every outcome (value, or exception class; for a refusal its verify
code, message and text).  The one expected difference is the product: a
server that sends only its leaf is accepted where aia_ext is enabled on the
connection's context when the chain is verified (OpenSSL runs the verify
callback of the connection's current context, and so does the fallback).

The fallback engine sets OpenSSL's verification aside for each client
connection; before issue 30 a context swapped before the handshake,
``disable()`` between wrap and handshake, and a TLS 1.2 renegotiation each
got an untrusted server accepted.
"""

from __future__ import annotations

import platform
import socket
import ssl
import threading
import time
import warnings
from typing import Any, Callable

import pytest

import aia_ext
from aia_ext._private.stdlib_ssl import new_plain_context
from aia_ext._private.testing import issue, write_pem

from .connections import TRANSPORTS, ask, open_connection, outcome
from .helpers import native_available
from .renegotiation import RenegotiatingServer, renegotiation_available

IS_PYPY = platform.python_implementation() == "PyPy"

needs_renegotiation = pytest.mark.skipif(
    renegotiation_available() is not None, reason=str(renegotiation_available()))


@pytest.fixture
def pki(reneg_lab: Any) -> dict[str, Any]:
    """The certificates the servers present, by name, and the two trust files."""
    return reneg_lab.pki  # type: ignore[no-any-return]


@pytest.fixture
def servers(reneg_lab: Any) -> Callable[..., RenegotiatingServer]:
    return reneg_lab.get  # type: ignore[no-any-return]


class Target:
    """A context a connection may be swapped to, described so that both worlds make one."""

    def __init__(self, trust: str, verify: bool, aia: str | None) -> None:
        self.trust = trust  # "root" or "stranger"
        self.verify = verify
        self.aia = aia  # None: plain ssl; "engine": the engine under test; "native"

    def make(self, pki: dict[str, Any], world: str, monkeypatch: pytest.MonkeyPatch) -> Any:
        cafile = pki["root_file"] if self.trust == "root" else pki["stranger_file"]
        if world == "plain" or self.aia is None:
            ctx = new_plain_context(ssl.PROTOCOL_TLS_CLIENT)
            ctx.load_verify_locations(cafile)
        else:
            with monkeypatch.context() as m:
                if self.aia == "native":
                    m.setenv("AIA_EXT_ENGINE", "native")
                ctx = aia_ext.create_default_context(cafile=cafile)
        if not self.verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    def completes(self) -> bool:
        """Whether a chain verified under this context is completed by AIA.

        The verify mode that counts is the connection's own (``SSL_new()``
        copied it): a swapped-in context's CERT_NONE changes nothing there.
        """
        return self.aia is not None and self.trust == "root"


TARGETS = {
    "plain": Target("root", True, None),
    "plain-other-trust": Target("stranger", True, None),
    "plain-cert-none": Target("root", False, None),
    "aia": Target("root", True, "engine"),
    "aia-other-trust": Target("stranger", True, "engine"),
    "aia-cert-none": Target("root", False, "engine"),
    "native": Target("root", True, "native"),
}
SERVERS = ("good", "leaf_only", "untrusted", "other_name")


def _creating(pki: dict[str, Any], world: str) -> ssl.SSLContext:
    if world == "plain":
        ctx = new_plain_context(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(pki["root_file"])
        return ctx
    return aia_ext.create_default_context(cafile=pki["root_file"])


def _expected(plain: list[tuple[Any, ...]], leaf_only: bool,
              completes: bool) -> list[tuple[Any, ...]]:
    """Plain ssl's outcomes, but for what AIA completing the chain changes."""
    if leaf_only and completes and plain[0][:2] == ("refused", 20):
        return [("ok", None), ("ok", b"PONG")]
    return plain


def _run(world: str, pki: dict[str, Any], srv: RenegotiatingServer, transport: str,
         between: Callable[[Any, Any, str], None]) -> list[tuple[Any, ...]]:
    ctx = _creating(pki, world)
    conn = open_connection(ctx, srv.address, transport)
    try:
        between(conn, ctx, world)
        return [outcome(conn.do_handshake), outcome(lambda: ask(conn, b"PING"))]
    finally:
        conn.close()


# ---- 1. The connection's context replaced before the handshake ------------------

@pytest.mark.parametrize("server_name", SERVERS)
@pytest.mark.parametrize("target", list(TARGETS))
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_context_swapped_before_the_handshake(transport, target, server_name, pki,
                                                servers, monkeypatch):
    spec = TARGETS[target]
    if spec.aia == "native" and not native_available():
        pytest.skip("the native engine cannot bind here (a pure install)")
    srv = servers(server_name)

    def swap(conn: Any, _ctx: Any, world: str) -> None:
        conn.context = spec.make(pki, world, monkeypatch)

    plain = _run("plain", pki, srv, transport, swap)
    ours = _run("aia", pki, srv, transport, swap)
    assert ours == _expected(plain, server_name == "leaf_only", spec.completes())


# ---- 2. The engine disabled (and enabled again) between wrap and handshake -------

SEQUENCES = {
    "disable": ("disable",),
    "disable-enable": ("disable", "enable"),
    "disable-enable-native": ("disable", "enable-native"),
    "enable-again": ("enable",),
}


@pytest.mark.parametrize("server_name", SERVERS)
@pytest.mark.parametrize("sequence", list(SEQUENCES))
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_the_engine_disabled_between_wrap_and_handshake(transport, sequence, server_name,
                                                        pki, servers, monkeypatch):
    if sequence.endswith("native") and not native_available():
        pytest.skip("the native engine cannot bind here (a pure install)")
    srv = servers(server_name)
    enabled = True

    def toggle(_conn: Any, ctx: Any, world: str) -> None:
        nonlocal enabled
        for step in SEQUENCES[sequence]:
            enabled = step != "disable"
            if world == "plain":
                continue
            if step == "disable":
                aia_ext.disable(ctx)
            else:
                with monkeypatch.context() as m:
                    if step == "enable-native":
                        m.setenv("AIA_EXT_ENGINE", "native")
                    aia_ext.enable(ctx)

    plain = _run("plain", pki, srv, transport, toggle)
    ours = _run("aia", pki, srv, transport, toggle)
    assert ours == _expected(plain, server_name == "leaf_only", enabled)


# ---- 3. A handshake completed implicitly by the first read or write ---------------

def _makefile_first(conn: Any) -> bytes:
    with conn.makefile("rwb") as f:
        f.write(b"PING\n")
        f.flush()
        return bytes(f.readline())


FIRST_CALLS: dict[str, Callable[[Any], Any]] = {
    "sendall": lambda conn: conn.sendall(b"PING\n"),
    # The server speaks only when asked: a verified connection's read times out.
    "recv": lambda conn: conn.recv(5),
    "makefile": _makefile_first,
}


@pytest.mark.parametrize("server_name", ["untrusted", "other_name", "good", "leaf_only"])
@pytest.mark.parametrize("first", list(FIRST_CALLS))
def test_a_handshake_completed_by_the_first_read_or_write(first, server_name, pki, servers):
    """Plain ssl verifies inside SSL_read/SSL_write; the fallback raised ValueError or
    SSLEOFError there before issue 30, after OpenSSL had completed the handshake."""
    srv = servers(server_name)

    def run(world: str) -> list[tuple[Any, ...]]:
        ctx = _creating(pki, world)
        with socket.create_connection(srv.address, timeout=30) as raw:
            conn = ctx.wrap_socket(raw, server_hostname="localhost",
                                   do_handshake_on_connect=False)
            if first == "recv":
                conn.settimeout(0.3)
            results = [outcome(lambda: FIRST_CALLS[first](conn))]
            conn.settimeout(30)
            results += [outcome(lambda: ask(conn, b"PING"))]
            if not IS_PYPY:
                # PyPy's own getpeercert() raises ValueError after a handshake that
                # a read or write completed, with or without aia_ext.
                results += [outcome(lambda: conn.getpeercert(True) is not None)]
            conn.close()
            return results

    plain, ours = run("plain"), run("aia")
    if server_name == "leaf_only":
        # Refused by plain ssl, completed by aia_ext: as a verified connection goes.
        assert plain[0][0] != "ok"
        assert IS_PYPY or plain[-1] == ("ValueError",)
        srv = servers("good")
        assert ours == run("aia")
    else:
        assert ours == plain


# ---- 4. TLS 1.2 renegotiation started by the server ------------------------------

@needs_renegotiation
@pytest.mark.parametrize("to", ["good", "untrusted", "other_name", "leaf_only"])
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_renegotiation(transport, to, pki, servers):
    """Before issue 30 the fallback verified only the first Certificate message, while
    OpenSSL's own verification stayed off: a renegotiation to an untrusted server's
    certificate kept application data flowing."""
    srv = servers("good", ssl.TLSVersion.TLSv1_2)
    before = srv.handshakes()

    def renegotiate(world: str) -> list[tuple[Any, ...]]:
        conn = open_connection(_creating(pki, world), srv.address, transport)
        try:
            return [outcome(conn.do_handshake), outcome(lambda: ask(conn, b"PING")),
                    outcome(lambda: ask(conn, b"RENEG " + to.encode())),
                    outcome(lambda: ask(conn, b"PING")),
                    outcome(lambda: conn.getpeercert(True) == pki[to][0].der)]
        finally:
            conn.close()

    plain, ours = renegotiate("plain"), renegotiate("aia")
    if to == "leaf_only":
        assert plain[2][:2] == ("refused", 20)
        assert ours == [("ok", None), ("ok", b"PONG"), ("ok", b"DONE"), ("ok", b"PONG"),
                        ("ok", True)]
    elif IS_PYPY and plain[2][0] == "refused":
        # PyPy's getpeercert() still answers with the first handshake's
        # certificate after a refused renegotiation; a refused fallback connection
        # answers as a failed handshake does.  Never with the refused certificate.
        assert ours[:4] == plain[:4] and ours[4] in (("ValueError",), plain[4])
    else:
        assert ours == plain
    assert srv.handshakes() - before == 2


@needs_renegotiation
@pytest.mark.parametrize("to", ["good", "untrusted"])
@pytest.mark.parametrize("target", ["plain", "plain-other-trust", "aia-other-trust",
                                    "aia-cert-none", "plain-cert-none"])
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_swap_after_the_handshake_then_a_renegotiation(transport, target, to, pki, servers,
                                                         monkeypatch):
    """OpenSSL verifies a renegotiation against the store of the connection's context at
    that moment, with the verify mode and peer name the connection was created with."""
    srv = servers("good", ssl.TLSVersion.TLSv1_2)
    spec = TARGETS[target]

    def run(world: str) -> list[tuple[Any, ...]]:
        conn = open_connection(_creating(pki, world), srv.address, transport)
        try:
            results = [outcome(conn.do_handshake)]
            conn.context = spec.make(pki, world, monkeypatch)
            results += [outcome(lambda: ask(conn, b"RENEG " + to.encode())),
                        outcome(lambda: ask(conn, b"PING"))]
            return results
        finally:
            conn.close()

    assert run("aia") == run("plain")


@needs_renegotiation
@pytest.mark.fallback_only
@pytest.mark.parametrize("to", ["good", "untrusted", "other_name"])
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_renegotiation_where_tls_unique_cannot_be_read(transport, to, engine, pki, servers,
                                                         monkeypatch):
    """Where the handshake in effect cannot be named (no ``tls-unique``) and no tap
    routes (a context swapped to plain ssl's), the chain in effect is verified after
    every read: an unknown identity never reads as "the same handshake"."""
    from aia_ext._private.engines.fallback import connection

    monkeypatch.setattr(connection, "_identity", lambda conn: None)
    srv = servers("good", ssl.TLSVersion.TLSv1_2)

    def run(world: str) -> list[tuple[Any, ...]]:
        conn = open_connection(_creating(pki, world), srv.address, transport)
        try:
            results = [outcome(conn.do_handshake)]
            conn.context = TARGETS["plain"].make(pki, world, monkeypatch)
            results += [outcome(lambda: ask(conn, b"PING")),
                        outcome(lambda: ask(conn, b"RENEG " + to.encode())),
                        outcome(lambda: ask(conn, b"PING"))]
            return results
        finally:
            conn.close()

    plain = run("plain")
    assert run("aia") == plain
    assert plain[2][:2] == (("ok", b"DONE") if to == "good" else ("refused", {
        "untrusted": 20, "other_name": 62}[to]))


# ---- 5. Sessions resumed after a swap -------------------------------------------

@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
@pytest.mark.parametrize("target", ["plain-other-trust", "aia-other-trust", "aia"])
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_session_resumed_after_a_swap(transport, target, version, pki, servers,
                                        monkeypatch):
    """A resumed handshake verifies nothing in OpenSSL; the session keeps the verdict
    of the handshake that made it, wherever the connection was swapped to."""
    srv = servers("good", version)
    spec = TARGETS[target]

    def run(world: str) -> list[tuple[Any, ...]]:
        ctx = _creating(pki, world)
        first = open_connection(ctx, srv.address, transport)
        first.do_handshake()
        ask(first, b"PING")  # TLS 1.3 tickets arrive after the handshake
        session = first.session
        first.close()
        conn = open_connection(ctx, srv.address, transport, session=session)
        try:
            conn.context = spec.make(pki, world, monkeypatch)
            return [outcome(conn.do_handshake), outcome(lambda: conn.session_reused),
                    outcome(lambda: ask(conn, b"PING"))]
        finally:
            conn.close()

    plain = run("plain")
    assert plain[1] == ("ok", True)
    assert run("aia") == plain


# ---- 6. disable(), enable(), inject and extract from other threads ----------------

def test_toggles_from_other_threads_never_accept_an_untrusted_server(pki, servers, aia,
                                                                     monkeypatch):
    """While handshakes run, other threads disable and enable the contexts and inject
    and extract: a verdict is OpenSSL's on whatever the context then supplies, never an
    acceptance of a server nobody trusts, and never a crash."""
    untrusted, leaf_only = servers("untrusted"), servers("leaf_only")
    contexts = [_creating(pki, "aia") for _ in range(4)]
    stop = threading.Event()
    errors: list[BaseException] = []

    def toggle() -> None:
        i = 0
        try:
            while not stop.is_set():
                ctx = contexts[i % len(contexts)]
                aia_ext.disable(ctx)
                aia_ext.inject_into_ssl()
                time.sleep(0.0005)  # let handshakes run between the changes
                aia_ext.enable(ctx)
                aia_ext.extract_from_ssl()
                i += 1
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=toggle) for _ in range(2)]
    for thread in threads:
        thread.start()
    seen: dict[str, set[Any]] = {"untrusted": set(), "leaf_only": set()}
    try:
        for i in range(40):
            for name, srv in (("untrusted", untrusted), ("leaf_only", leaf_only)):
                conn = open_connection(contexts[i % len(contexts)], srv.address,
                                       TRANSPORTS[i % 2])
                try:
                    result = outcome(conn.do_handshake)
                    seen[name].add(result[:2])
                    if result[0] == "ok":
                        assert ask(conn, b"PING") == b"PONG"
                finally:
                    conn.close()
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        aia_ext.extract_from_ssl()
    assert not errors
    assert seen["untrusted"] == {("refused", 20)}
    assert seen["leaf_only"] <= {("refused", 20), ("ok", None)}


# ---- 7. A context that makes client and server connections, from several threads ---

def test_server_connections_never_copy_a_client_window(pki, root, tmp_path):
    """Under the fallback, OpenSSL's verification is set aside on the context while a
    client connection is created; a server connection created then would copy
    CERT_NONE and stop asking for client certificates.  Every server connection here
    requires one, and no client sends one: every server handshake must fail."""
    server_leaf = issue("localhost", root, dns=["localhost"])
    chain = write_pem(tmp_path / "server.pem", server_leaf)
    key = tmp_path / "server.key"
    key.write_bytes(server_leaf.key_pem)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # PROTOCOL_TLS, as servers use it
        dual = aia_ext.SSLContext(ssl.PROTOCOL_TLS)
    dual.load_cert_chain(str(chain), str(key))  # PyPy 3.9 takes no Path here
    dual.load_verify_locations(pki["root_file"])
    dual.verify_mode = ssl.CERT_REQUIRED
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(30)
    address = listener.getsockname()
    stop = threading.Event()
    accepted: list[str] = []

    def churn() -> None:  # client connections: one window each
        while not stop.is_set():
            incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
            dual.wrap_bio(incoming, outgoing, server_hostname="localhost")
            time.sleep(0.0005)  # a client's pace, not a spin on the lock

    def serve() -> None:
        for _ in range(100):
            conn, _ = listener.accept()
            try:
                with dual.wrap_socket(conn, server_side=True):
                    accepted.append("accepted")  # a handshake without a client certificate
            except (ssl.SSLError, OSError):
                accepted.append("refused")

    churners = [threading.Thread(target=churn) for _ in range(3)]
    server_thread = threading.Thread(target=serve)
    for thread in (*churners, server_thread):
        thread.start()
    client = new_plain_context(ssl.PROTOCOL_TLS_CLIENT)
    client.load_verify_locations(pki["root_file"])
    client.maximum_version = ssl.TLSVersion.TLSv1_2  # the server's request fails the handshake
    try:
        for _ in range(100):
            with socket.create_connection(address, timeout=30) as raw:
                try:
                    client.wrap_socket(raw, server_hostname="localhost").close()
                except (ssl.SSLError, OSError):
                    pass
    finally:
        server_thread.join(60)
        stop.set()
        for thread in churners:
            thread.join()
        listener.close()
    assert accepted == ["refused"] * 100


# ---- 8. Every caller of _wrap_socket meets the verifier ----------------------------

@pytest.mark.parametrize("how", ["no-owner", "ssl-socket-create"])
def test_every_caller_meets_the_verifier(how, pki, servers):
    """What _wrap_socket returns checks every handshake, read and write itself, so a
    caller that makes its own wrapper (gevent, eventlet, or none at all) cannot get
    around it: a server nobody trusts is refused, as by plain ssl."""
    srv = servers("untrusted")
    ctx = _creating(pki, "aia")
    with socket.create_connection(srv.address, timeout=30) as raw:
        if how == "no-owner":
            low = ctx._wrap_socket(raw, False, "localhost")
            result = outcome(low.do_handshake)
            read = outcome(lambda: low.read(5))
        else:
            conn = ssl.SSLSocket._create(sock=raw.dup(), context=ctx,
                                         server_hostname="localhost",
                                         do_handshake_on_connect=False)
            with conn:
                result = outcome(conn.do_handshake)
                read = outcome(lambda: conn.recv(5))
    assert result[:2] == ("refused", 20)
    # As a connection whose handshake failed: EOF on CPython; PyPy repeats the failure.
    assert read[0] in ("SSLEOFError", "ok") or (IS_PYPY and read[0] == "refused")
