"""The fallback engine (AIA_EXT_ENGINE=fallback): verification after the handshake, in Python.

Real handshakes against the same local servers as the native tests.  Where a
verify code differs from the native engine's, the test says so and why.
"""

from __future__ import annotations

import asyncio
import datetime
import http.client
import socket
import ssl
import sys
import time
import urllib.request

import pytest

import aia_ext
from aia_ext._private.engines.fallback.context import HAS_TAP
from aia_ext._private.testing import issue, write_pem

from .helpers import closed, fetches_of, subject_hash, unique_path, verify_code

NOW = datetime.datetime.now(datetime.timezone.utc)
DAY = datetime.timedelta(days=1)


pytestmark = pytest.mark.fallback_only


def ctx_for(root_file: str, **options: object) -> ssl.SSLContext:
    ctx = aia_ext.create_default_context(cafile=root_file, **options)
    assert aia_ext.engine_of(ctx) == "fallback"  # really the fallback engine
    return ctx


@pytest.mark.parametrize("case,expected", [
    ("hostname", 62), ("expired", 10), ("not-yet-valid", 9), ("untrusted-root", 20),
    ("self-signed-served", 19),
])
def test_verdicts_match_openssls_codes(case, expected, make_chain, server, aia, root, root_file):
    hostname = "localhost"
    if case == "hostname":
        chain = make_chain()
        leaf, hostname = chain.leaf, "other.example"
    elif case in ("expired", "not-yet-valid"):
        when = (dict(not_before=NOW - 9 * DAY, not_after=NOW - DAY) if case == "expired"
                else dict(not_before=NOW + DAY, not_after=NOW + 9 * DAY))
        leaf = make_chain(**when).leaf
    elif case == "untrusted-root":
        leaf = make_chain(issuer_root=issue("stranger", ca=True)).leaf
    else:
        fake = issue("aia_ext test root", ca=True)
        leaf = issue("localhost", fake, aia=[aia.serve(unique_path(), fake.der)],
                     dns=["localhost"])
    assert verify_code(ctx_for(root_file), server(leaf), hostname) == expected


def test_no_application_data_on_an_unverified_connection(make_chain, server, root_file):
    chain = make_chain(issuer_root=issue("stranger", ca=True))
    srv = server(chain.leaf)
    with pytest.raises(urllib.request.URLError) as info:
        urllib.request.urlopen(srv.url, context=ctx_for(root_file), timeout=30)
    assert isinstance(info.value.reason, ssl.SSLCertVerificationError)
    assert info.value.reason.verify_code == 20
    deadline = time.monotonic() + 5
    while not sum(srv.handshakes.values()) and time.monotonic() < deadline:
        time.sleep(0.02)
    if HAS_TAP:
        # Refused inside the handshake, with OpenSSL's alert: the server's
        # handshake fails as with plain ssl (issue 26, item 16).
        assert srv.handshakes == {"failed": 1}
    else:
        while not srv.app_bytes and time.monotonic() < deadline:
            time.sleep(0.02)
        assert srv.app_bytes == [0]  # the request never left the client


def test_clients(make_chain, server, aia, root_file):
    chain = make_chain()
    srv = server(chain.leaf)
    ctx = ctx_for(root_file)
    with urllib.request.urlopen(srv.url, context=ctx, timeout=30) as response:
        assert response.read() == b"ok\n"
    conn = http.client.HTTPSConnection("localhost", srv.port, context=ctx, timeout=30)
    conn.request("GET", "/")
    assert conn.getresponse().read() == b"ok\n"
    conn.close()
    urllib3 = pytest.importorskip("urllib3")
    with urllib3.PoolManager(ssl_context=ctx) as pool:
        assert pool.request("GET", srv.url).data == b"ok\n"
    httpx = pytest.importorskip("httpx")
    with httpx.Client(verify=ctx) as client:
        assert client.get(srv.url).text == "ok\n"
    assert fetches_of(aia, chain) == 1


def test_asyncio_sslobject_path(make_chain, server, root_file):
    good, bad = make_chain(), make_chain(issuer_root=issue("stranger", ca=True))
    good_srv, bad_srv = server(good.leaf), server(bad.leaf)
    ctx = ctx_for(root_file)

    async def get(port: int) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx,
                                                       server_hostname="localhost")
        try:
            writer.write(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            return await reader.read()
        finally:
            await closed(writer)

    assert asyncio.run(get(good_srv.port)).endswith(b"ok\n")
    with pytest.raises(ssl.SSLCertVerificationError) as info:
        asyncio.run(get(bad_srv.port))
    assert info.value.verify_code == 20


def test_report_under_fallback(make_chain, server, root_file):
    chain = make_chain()
    ctx = ctx_for(root_file)
    with socket.create_connection(server(chain.leaf).address) as raw, \
            ctx.wrap_socket(raw, server_hostname="localhost") as tls:
        report = aia_ext.report(tls)
    assert report is not None and report.verified
    assert [(f.url, f.source) for f in report.added] == [(chain.urls[0], "network")]


def test_capath_only_store(make_chain, server, root, tmp_path):
    # OpenSSL reads a capath lazily, by subject hash, so get_ca_certs() never
    # lists it; the fallback's OpenSSL looks it up the same way.
    capath = tmp_path / "capath"
    capath.mkdir()
    write_pem(capath / subject_hash(root), root)
    chain = make_chain()
    ctx = aia_ext.create_default_context(capath=str(capath))
    assert ctx.get_ca_certs() == []
    assert verify_code(ctx, server(chain.leaf)) == 0


def test_enable_on_a_subclass_that_forbids_subclassing_says_why():
    class Final(ssl.SSLContext):
        def __init_subclass__(cls, **kwargs: object) -> None:
            raise TypeError("Final cannot be subclassed")

    ctx = Final(ssl.PROTOCOL_TLS_CLIENT)
    with pytest.raises(aia_ext.UnsupportedPlatformError, match=r"Final.*in place"):
        aia_ext.enable(ctx)
    assert type(ctx) is Final and not aia_ext.is_enabled(ctx)


def test_enable_on_a_slotted_subclass(make_chain, server, root_file):
    class Slotted(ssl.SSLContext):
        __slots__ = ("extra",)

    ctx = Slotted(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(root_file)
    aia_ext.enable(ctx)
    ctx.extra = 1
    assert isinstance(ctx, Slotted) and aia_ext.engine_of(ctx) == "fallback"
    assert verify_code(ctx, server(make_chain().leaf)) == 0


def test_a_server_certificate_loaded_as_anchor_before_enable_is_named(root, tmp_path, caplog):
    leaf = issue("localhost", root, dns=["localhost"])
    ctx = ssl.create_default_context(cafile=write_pem(tmp_path / "leaf.pem", leaf))
    with caplog.at_level("WARNING", logger="aia_ext"):
        aia_ext.enable(ctx)
    assert "1 certificate(s) loaded into this context before it was enabled" in caplog.text


def test_enable_and_disable_a_fallback_context(make_chain, server, aia, root_file):
    chain = make_chain()
    srv = server(chain.leaf)
    ctx = ctx_for(root_file)
    aia_ext.enable(ctx, max_fetches=0)
    assert verify_code(ctx, srv) == 20
    aia_ext.disable(ctx)
    assert not aia_ext.is_enabled(ctx)
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname  # OpenSSL's own again
    assert verify_code(ctx, srv) == 20
    assert fetches_of(aia, chain) == 0


def test_inject_under_fallback(make_chain, server, aia, root_file):
    original = ssl.SSLContext
    chain = make_chain()
    aia_ext.inject_into_ssl()
    try:
        ctx = ssl.create_default_context(cafile=root_file)
        assert isinstance(ctx, aia_ext.SSLContext) and aia_ext.is_enabled(ctx)
        assert verify_code(ctx, server(chain.leaf)) == 0
    finally:
        aia_ext.extract_from_ssl()
    assert ssl.SSLContext is original
    assert fetches_of(aia, chain) == 1


def test_engine_variable_is_validated(monkeypatch):
    monkeypatch.setenv("AIA_EXT_ENGINE", "turbo")
    with pytest.raises(ValueError, match="AIA_EXT_ENGINE"):
        aia_ext.create_default_context()


def test_getpeercert_matches_what_ssl_gives_a_verified_connection(make_chain, server, root,
                                                                  root_file):
    # urllib3 1.26 (pip's) matches host names on getpeercert()'s dictionary.
    chain = make_chain()
    srv = server(chain.leaf, chain.intermediates)
    plain = ssl.create_default_context(cafile=root_file)
    with socket.create_connection(srv.address) as raw, \
            plain.wrap_socket(raw, server_hostname="localhost") as tls:
        expected = tls.getpeercert()
    assert expected
    with socket.create_connection(srv.address) as raw, \
            ctx_for(root_file).wrap_socket(raw, server_hostname="localhost") as tls:
        assert tls.getpeercert() == expected
        assert tls.getpeercert(binary_form=True) == chain.leaf.der


@pytest.fixture
def broken_verifier(monkeypatch):
    """A fault inside the fallback's verifier (a bug, or an OpenSSL binding that fails)."""
    from aia_ext._private.engines.fallback import verify

    def fault(*args, **kwargs):
        raise RuntimeError("injected fault")

    monkeypatch.setattr(verify, "trust_set_for", fault)


@pytest.mark.parametrize("handshake_on_connect", [True, False])
def test_any_verifier_error_fails_closed_and_no_byte_leaves(handshake_on_connect, make_chain,
                                                            server, root_file, broken_verifier):
    """Issue 13, 3: only SSLCertVerificationError closed the socket, so a caller
    swallowing another error could still send data."""
    chain = make_chain()
    srv = server(chain.leaf)
    ctx = ctx_for(root_file)
    with socket.create_connection(srv.address, timeout=30) as raw:
        with pytest.raises(ssl.SSLCertVerificationError) as info:
            tls = ctx.wrap_socket(raw, server_hostname="localhost",
                                  do_handshake_on_connect=handshake_on_connect)
            tls.do_handshake()
        if not handshake_on_connect:
            # A caller that swallowed the error finds the connection failed, as
            # plain ssl leaves one whose handshake failed: nothing is sent.  (PyPy's
            # ssl raises the handshake's failure again there.)
            with pytest.raises(ssl.SSLCertVerificationError if sys.implementation.name == "pypy"
                               else ssl.SSLEOFError):
                tls.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            tls.close()
    assert info.value.verify_code == 1
    assert isinstance(info.value.__cause__, RuntimeError)
    deadline = time.monotonic() + 5
    while not sum(srv.handshakes.values()) and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.1)  # a completed handshake records its bytes when the client closes
    assert sum(srv.app_bytes) == 0
    if HAS_TAP:
        assert srv.handshakes == {"failed": 1}  # refused inside the handshake


def test_asyncio_stays_closed_after_a_verifier_error(make_chain, server, root_file,
                                                    broken_verifier):
    chain = make_chain()
    srv = server(chain.leaf)

    async def main() -> None:
        with pytest.raises(ssl.SSLCertVerificationError):
            await asyncio.open_connection(*srv.address, ssl=ctx_for(root_file),
                                          server_hostname="localhost")

    asyncio.run(main())
    deadline = time.monotonic() + 5
    while sum(srv.handshakes.values()) == 0 or (srv.handshakes["ok"] and not srv.app_bytes):
        if time.monotonic() > deadline:
            break
        time.sleep(0.02)
    # The client aborted: the server either saw the handshake fail or read nothing.
    assert sum(srv.handshakes.values()) == 1
    assert sum(srv.app_bytes) == 0
