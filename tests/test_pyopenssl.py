"""aia_ext.enable() on pyOpenSSL contexts: real handshakes through OpenSSL.SSL.Connection."""

from __future__ import annotations

import datetime
import socket

import pytest

import aia_ext
from aia_ext._private.testing import issue

from .helpers import fetches_of, unique_path

SSL = pytest.importorskip("OpenSSL.SSL")

NOW = datetime.datetime.now(datetime.timezone.utc)
DAY = datetime.timedelta(days=1)


def pyopenssl_context(root_file: str, mode: int | None = None):
    ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    ctx.load_verify_locations(root_file)
    ctx.set_verify(SSL.VERIFY_PEER if mode is None else mode)
    return ctx


def connect(ctx, srv) -> bool:
    """A real handshake; True if it completed, False on a verification failure."""
    with socket.create_connection(srv.address, timeout=30) as raw:
        raw.settimeout(None)  # pyOpenSSL drives the fd itself: it must block
        conn = SSL.Connection(ctx, raw)
        conn.set_tlsext_host_name(b"localhost")
        conn.set_connect_state()
        try:
            conn.do_handshake()
        except SSL.Error as exc:
            assert "certificate verify failed" in str(exc)
            return False
        conn.send(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        assert conn.recv(1024).endswith(b"ok\n")
        return True


def test_leaf_only_fails_plainly_and_completes_enabled(make_chain, server, aia, root_file):
    chain = make_chain()
    srv = server(chain.leaf)
    assert connect(pyopenssl_context(root_file), srv) is False
    ctx = aia_ext.enable(pyopenssl_context(root_file))
    assert aia_ext.is_enabled(ctx)
    assert connect(ctx, srv) is True
    assert connect(ctx, srv) is True  # from the cache
    assert fetches_of(aia, chain) == 1


def test_two_missing_levels(make_chain, server, aia, root_file):
    chain = make_chain(levels=2)
    assert connect(aia_ext.enable(pyopenssl_context(root_file)), server(chain.leaf)) is True
    assert [aia.hits[p] for p in chain.paths] == [1, 1]


@pytest.mark.parametrize("case", ["untrusted-root", "self-signed-served", "expired-leaf",
                                  "expired-intermediate"])
def test_invalid_chains_stay_rejected(case, make_chain, server, aia, root, root_file):
    if case == "untrusted-root":
        leaf = make_chain(issuer_root=issue("stranger", ca=True)).leaf
    elif case == "self-signed-served":
        fake = issue("aia_ext test root", ca=True)
        leaf = issue("localhost", fake, aia=[aia.serve(unique_path(), fake.der)],
                     dns=["localhost"])
    elif case == "expired-leaf":
        leaf = make_chain(not_before=NOW - 9 * DAY, not_after=NOW - DAY).leaf
    else:
        old = issue("Intermediate", root, ca=True, not_before=NOW - 9 * DAY, not_after=NOW - DAY)
        leaf = issue("localhost", old, aia=[aia.serve(unique_path(), old.der)],
                     dns=["localhost"])
    assert connect(aia_ext.enable(pyopenssl_context(root_file)), server(leaf)) is False


def test_verify_none_fetches_nothing(make_chain, server, aia, root_file):
    chain = make_chain()
    ctx = aia_ext.enable(pyopenssl_context(root_file, SSL.VERIFY_NONE))
    assert ctx.get_verify_mode() == SSL.VERIFY_NONE  # enable() did not turn verification on
    assert connect(ctx, server(chain.leaf)) is True
    assert fetches_of(aia, chain) == 0


def test_disable(make_chain, server, aia, root_file):
    chain = make_chain()
    ctx = aia_ext.enable(pyopenssl_context(root_file), max_fetches=0)
    aia_ext.disable(ctx)
    assert not aia_ext.is_enabled(ctx)
    assert connect(ctx, server(chain.leaf)) is False
    assert fetches_of(aia, chain) == 0


def test_a_completed_chain_teaches_its_intermediate(make_chain, server, aia, root_file):
    """Issue 23 on pyOpenSSL, where it can learn: a path its chase completed.  A later
    leaf-only server without any caIssuers URL, under the same intermediate, verifies."""
    chain = make_chain()
    ctx = aia_ext.enable(pyopenssl_context(root_file))
    assert connect(ctx, server(chain.leaf)) is True
    no_aia = issue("localhost", chain.intermediates[0], dns=["localhost"])
    assert connect(ctx, server(no_aia)) is True
    assert fetches_of(aia, chain) == 1
    off = aia_ext.enable(pyopenssl_context(root_file), learn_intermediates=False)
    assert connect(off, server(no_aia)) is False


def _ask(conn, line: bytes) -> bytes:
    conn.sendall(line + b"\n")
    answer = b""
    while not answer.endswith(b"\n"):
        answer += conn.recv(64)
    return answer.strip()


@pytest.mark.engine_agnostic
@pytest.mark.parametrize("first", ["good", "leaf_only"])
@pytest.mark.parametrize("to", ["good", "untrusted", "leaf_only"])
def test_every_handshake_is_judged_under_renegotiation(first, to, reneg_lab, root_file):
    """Issue 30: the callback kept one outcome per connection, so a renegotiation to a
    certificate with a missing issuer was answered from the first handshake's.  Each
    handshake now gets its own; plain pyOpenSSL is the reference, with AIA completing
    the leaf-only chain."""
    from .renegotiation import renegotiation_available

    if renegotiation_available() is not None:
        pytest.skip(renegotiation_available())
    import ssl

    srv = reneg_lab.get(first, ssl.TLSVersion.TLSv1_2)

    def run(ctx) -> list[object]:
        results: list[object] = []
        with socket.create_connection(srv.address, timeout=30) as raw:
            raw.settimeout(None)
            conn = SSL.Connection(ctx, raw)
            conn.set_tlsext_host_name(b"localhost")
            conn.set_connect_state()
            for call in (conn.do_handshake, lambda: _ask(conn, b"RENEG " + to.encode())):
                try:
                    results.append(call())
                except SSL.Error as exc:
                    results.append("certificate verify failed" in str(exc))
                    break
        return results

    enabled = run(aia_ext.enable(pyopenssl_context(root_file)))
    assert enabled == ([None, True] if to == "untrusted" else [None, b"DONE"])
    if first == "good" and to != "leaf_only":
        assert enabled == run(pyopenssl_context(root_file))
