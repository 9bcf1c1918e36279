"""Issue 26, item 2: TLS session resumption, on TLS 1.2 and 1.3, sockets and SSLObject.

A resumed handshake carries no certificates, and under the fallback engine
OpenSSL did not verify the session's first handshake.  Plain ssl and the native
engine resume any session; the fallback resumes a session only when it saw it
come out of a connection it had verified, and then as plain ssl does.  Every
case is a real server on 127.0.0.1 with a session cache; resumption is
confirmed by ``session_reused``.
"""

from __future__ import annotations

import socket
import ssl
from typing import Any

import pytest

import aia_ext
from aia_ext._private.testing import issue

VERSIONS = [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3]


def _client(root_file: str, version: ssl.TLSVersion) -> ssl.SSLContext:
    ctx = aia_ext.create_default_context(cafile=root_file)
    ctx.maximum_version = version
    return ctx


def _socket_session(ctx: ssl.SSLContext, address: tuple[str, int], hostname: str,
                    session: Any = None) -> tuple[Any, bool]:
    """One request on a socket: (its session, whether it resumed ``session``)."""
    with socket.create_connection(address, timeout=30) as raw, \
            ctx.wrap_socket(raw, server_hostname=hostname, session=session) as tls:
        tls.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert tls.recv(1024).startswith(b"HTTP/1.1 200")  # reads TLS 1.3's tickets too
        return tls.session, tls.session_reused


def _object_session(ctx: ssl.SSLContext, address: tuple[str, int], hostname: str,
                    session: Any = None) -> tuple[Any, bool]:
    """The same through an SSLObject and memory BIOs, as asyncio drives one."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=hostname, session=session)
    with socket.create_connection(address, timeout=30) as raw:
        def pump() -> None:
            data = outgoing.read()
            if data:
                raw.sendall(data)

        while True:
            try:
                obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                pump()
                chunk = raw.recv(65536)
                if not chunk:
                    raise ConnectionError("closed during the handshake") from None
                incoming.write(chunk)
        pump()
        obj.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        pump()
        answer = b""
        while not answer.startswith(b"HTTP/1.1 200"):
            incoming.write(raw.recv(65536))
            try:
                answer += obj.read(1024)
            except ssl.SSLWantReadError:
                continue
        return obj.session, obj.session_reused


TRANSPORTS = {"socket": _socket_session, "sslobject": _object_session}


@pytest.fixture
def resumable(root, server):
    """A server that keeps sessions, whose certificate is good for two names."""
    intermediate = issue("Session Intermediate", root, ca=True)
    leaf = issue("localhost", intermediate, dns=["localhost", "alias.test"])
    return server(leaf, [intermediate])


@pytest.mark.parametrize("transport", list(TRANSPORTS))
@pytest.mark.parametrize("version", VERSIONS)
def test_a_verified_session_resumes(transport, version, resumable, root_file):
    connect = TRANSPORTS[transport]
    ctx = _client(root_file, version)
    session, reused = connect(ctx, resumable.address, "localhost")
    assert not reused
    _session, reused = connect(ctx, resumable.address, "localhost", session)
    assert reused


@pytest.mark.parametrize("transport", list(TRANSPORTS))
@pytest.mark.parametrize("version", VERSIONS)
def test_a_verified_session_resumes_as_with_plain_ssl(transport, version, resumable,
                                                      root_file):
    """OpenSSL verifies nothing on resumption and checks no name: a resumed session
    keeps the verdict of the handshake that made it.  Both engines resume exactly
    when plain ssl does (issue 30: parity), the fallback only sessions it saw come
    out of a connection it had verified."""
    connect = TRANSPORTS[transport]
    plain = ssl.create_default_context(cafile=root_file)
    plain.maximum_version = version
    ctx = _client(root_file, version)
    for context in (plain, ctx):
        session, _ = connect(context, resumable.address, "localhost")
        assert connect(context, resumable.address, "alias.test", session)[1]
        assert connect(context, resumable.address, "other.test", session)[1]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.fallback_only
def test_a_session_from_a_refused_connection_is_never_usable(version, server, root_file):
    """The fallback refuses after OpenSSL completed the handshake, so an SSLObject that
    was refused still has a session; offering it must not give a connection."""
    stranger = issue("Stranger", ca=True)
    srv = server(issue("localhost", stranger, dns=["localhost"]))
    ctx = _client(root_file, version)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with socket.create_connection(srv.address, timeout=30) as raw:
        with pytest.raises(ssl.SSLCertVerificationError):
            while True:
                try:
                    obj.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    raw.sendall(outgoing.read())
                    incoming.write(raw.recv(65536))
    session = obj.session
    with pytest.raises(ssl.SSLCertVerificationError) as info:
        _object_session(ctx, srv.address, "localhost", session)
    assert info.value.verify_code in (1, 20)  # never a usable connection


@pytest.mark.parametrize("version", VERSIONS)
def test_resumption_does_not_fetch_again(version, make_chain, server, aia, root_file):
    chain = make_chain()
    srv = server(chain.leaf)
    ctx = _client(root_file, version)
    session, _ = _socket_session(ctx, srv.address, "localhost")
    _session, reused = _socket_session(ctx, srv.address, "localhost", session)
    assert reused
    assert aia.hits[chain.paths[0]] == 1
