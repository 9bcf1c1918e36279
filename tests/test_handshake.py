"""Real TLS handshakes on 127.0.0.1 against servers that send incomplete chains."""

from __future__ import annotations

import datetime
import gc
import socket
import ssl
import sys
import threading
import time

import pytest

import aia_ext
from aia_ext._private.testing import issue

from .helpers import chain_lengths, encode, fetches_of, unique_path, verify_code

UNABLE_TO_GET_ISSUER_CERT_LOCALLY = 20
SELF_SIGNED_CERT_IN_CHAIN = 19
CERT_HAS_EXPIRED = 10
HOSTNAME_MISMATCH = 62
# ssl.VERIFY_X509_PARTIAL_CHAIN is new in 3.10; the flag is OpenSSL's
# X509_V_FLAG_PARTIAL_CHAIN, which every supported OpenSSL honours.
PARTIAL_CHAIN = getattr(ssl, "VERIFY_X509_PARTIAL_CHAIN", 0x80000)

needs_chain_api = pytest.mark.skipif(
    sys.version_info < (3, 10), reason="SSLObject.get_verified_chain() is new in 3.10"
)


def plain(root_file: str) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=root_file)


def enabled(root_file: str, **options: object) -> ssl.SSLContext:
    # Either engine: the native one enables in place, the fallback verifies
    # after the handshake (AIA_EXT_ENGINE=fallback runs this file again).
    return aia_ext.create_default_context(cafile=root_file, **options)


def test_complete_chain_needs_no_fetch(make_chain, server, aia, root_file):
    chain = make_chain()
    srv = server(chain.leaf, chain.intermediates)
    assert verify_code(enabled(root_file), srv) == 0
    assert fetches_of(aia, chain) == 0


def test_leaf_only_fails_plainly_and_succeeds_enabled_then_cached(make_chain, server, aia,
                                                                   root_file):
    chain = make_chain()
    srv = server(chain.leaf)
    assert verify_code(plain(root_file), srv) == UNABLE_TO_GET_ISSUER_CERT_LOCALLY
    assert fetches_of(aia, chain) == 0
    ctx = enabled(root_file)
    assert verify_code(ctx, srv) == 0
    assert fetches_of(aia, chain) == 1
    assert verify_code(ctx, srv) == 0
    assert verify_code(enabled(root_file), srv) == 0  # cache is process-wide
    assert fetches_of(aia, chain) == 1


def test_create_default_context_with_cafile(make_chain, server, aia, root_file):
    chain = make_chain()
    ctx = aia_ext.create_default_context(cafile=root_file)
    assert aia_ext.is_enabled(ctx)
    assert verify_code(ctx, server(chain.leaf)) == 0
    assert fetches_of(aia, chain) == 1


@needs_chain_api
@pytest.mark.native_only  # the fallback verifies after the handshake: no OpenSSL chain
def test_fetched_certificates_stay_out_of_the_served_chain(make_chain, server, root_file):
    # Invariant: fetched certs go to a private untrusted stack, never into the
    # peer chain the session keeps.
    chain = make_chain()
    served, verified = chain_lengths(enabled(root_file), server(chain.leaf))
    assert (served, verified) == (1, 3)


def test_two_missing_levels_take_two_fetches(make_chain, server, aia, root_file):
    chain = make_chain(levels=2)
    srv = server(chain.leaf)
    assert verify_code(plain(root_file), srv) == UNABLE_TO_GET_ISSUER_CERT_LOCALLY
    assert verify_code(enabled(root_file), srv) == 0
    assert [aia.hits[p] for p in chain.paths] == [1, 1]


def test_only_the_missing_level_is_fetched(make_chain, server, aia, root_file):
    chain = make_chain(levels=2)
    # The server sends the lower intermediate; only the top one is missing.
    srv = server(chain.leaf, chain.intermediates[:1])
    assert verify_code(enabled(root_file), srv) == 0
    assert [aia.hits[p] for p in chain.paths] == [0, 1]


@pytest.mark.parametrize("fmt", ["der", "pem", "p7der", "p7pem"])
def test_response_formats(fmt, make_chain, server, aia, root_file):
    chain = make_chain(fmt=fmt)
    assert verify_code(enabled(root_file), server(chain.leaf)) == 0
    assert fetches_of(aia, chain) == 1


@pytest.mark.parametrize("fmt", ["p7der", "pem"])
def test_bundle_with_two_levels_completes_with_one_fetch(fmt, make_chain, server, aia,
                                                         root_file):
    chain = make_chain(levels=2)
    aia.serve(chain.paths[0], encode(chain.intermediates, fmt))
    assert verify_code(enabled(root_file), server(chain.leaf)) == 0
    assert [aia.hits[p] for p in chain.paths] == [1, 0]


def test_hostname_mismatch_is_reported_after_completion(make_chain, server, aia, root_file):
    chain = make_chain()
    srv = server(chain.leaf)
    assert verify_code(enabled(root_file), srv, hostname="other.example") == HOSTNAME_MISMATCH
    assert fetches_of(aia, chain) == 1


def test_expired_leaf_keeps_its_code(make_chain, server, root_file):
    now = datetime.datetime.now(datetime.timezone.utc)
    chain = make_chain(not_before=now - datetime.timedelta(days=10),
                       not_after=now - datetime.timedelta(days=1))
    srv = server(chain.leaf)
    assert verify_code(enabled(root_file), srv) == CERT_HAS_EXPIRED
    # With the intermediate served, plain ssl says the same: nothing changed.
    assert verify_code(plain(root_file), server(chain.leaf, chain.intermediates)) == \
        CERT_HAS_EXPIRED


def test_cert_none_context_never_fetches(make_chain, server, aia, root_file):
    chain = make_chain()
    ctx = enabled(root_file)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    assert verify_code(ctx, server(chain.leaf)) == 0
    assert fetches_of(aia, chain) == 0


@pytest.mark.parametrize("partial_chain", [False, True])
def test_untrusted_intermediate_is_not_an_anchor(partial_chain, make_chain, server, aia,
                                                 root_file):
    other_root = issue("some other root", ca=True)
    chain = make_chain(issuer_root=other_root)
    ctx = enabled(root_file)
    if partial_chain:
        ctx.verify_flags |= PARTIAL_CHAIN
    assert verify_code(ctx, server(chain.leaf)) == UNABLE_TO_GET_ISSUER_CERT_LOCALLY
    assert fetches_of(aia, chain) == 1


@pytest.mark.parametrize("partial_chain", [False, True])
def test_self_signed_root_served_by_aia_is_rejected(partial_chain, server, aia, root_file):
    fake_root = issue("attacker root", ca=True)
    url = aia.serve(unique_path(), fake_root.der)
    leaf = issue("localhost", fake_root, aia=[url], dns=["localhost"])
    ctx = enabled(root_file)
    if partial_chain:
        ctx.verify_flags |= PARTIAL_CHAIN
    assert verify_code(ctx, server(leaf)) == SELF_SIGNED_CERT_IN_CHAIN
    assert aia.hits[aia.path_of(url)] == 1


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _fails_within(root, root_file, server, url: str, timeout: float) -> None:
    """A leaf whose only caIssuers URL gives nothing: code 20, within the timeout."""
    inter = issue("Intermediate", root, ca=True)
    leaf = issue("localhost", inter, aia=[url], dns=["localhost"])
    started = time.monotonic()
    assert verify_code(enabled(root_file, timeout=timeout), server(leaf)) == \
        UNABLE_TO_GET_ISSUER_CERT_LOCALLY
    assert time.monotonic() - started < timeout + 1.0


def test_aia_server_down(server, root, root_file):
    _fails_within(root, root_file, server, f"http://127.0.0.1:{_closed_port()}/i.der", 2.0)


@pytest.mark.parametrize("status,body", [(404, b"nope"), (200, b"garbage, not a cert"),
                                         (200, b""), (500, b"")])
def test_aia_server_errors(status, body, server, aia, root, root_file):
    inter = issue("Intermediate", root, ca=True)
    url = aia.serve(unique_path(), body, status=status)
    leaf = issue("localhost", inter, aia=[url], dns=["localhost"])
    srv = server(leaf)
    assert verify_code(enabled(root_file), srv) == UNABLE_TO_GET_ISSUER_CERT_LOCALLY
    assert verify_code(enabled(root_file), srv) == UNABLE_TO_GET_ISSUER_CERT_LOCALLY
    assert aia.total_hits >= 1
    path = aia.path_of(url)
    assert aia.hits[path] == 1  # the failure is cached (negative TTL)


def test_silent_aia_server_times_out(server, root, root_file):
    # Accepts the connection, never answers.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        _fails_within(root, root_file, server, f"http://127.0.0.1:{port}/i.der", 0.5)


def test_concurrent_cold_handshakes_share_one_fetch(make_chain, server, aia, root_file):
    chain = make_chain()
    body = chain.intermediates[0].der
    release = threading.Event()

    def slow(handler):  # holds the first fetch open until every thread has started
        release.wait(10)
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    aia.serve(chain.paths[0], body, handler=slow)
    srv = server(chain.leaf)
    ctx = enabled(root_file)
    results: list[int] = []
    barrier = threading.Barrier(16)

    def worker() -> None:
        barrier.wait()
        results.append(verify_code(ctx, srv))

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    release.set()
    for t in threads:
        t.join(30)
    assert results == [0] * 16
    assert fetches_of(aia, chain) == 1


def test_enable_rejects_non_contexts():
    with pytest.raises(TypeError, match=r"ssl\.SSLContext"):
        aia_ext.enable(object())  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        aia_ext.is_enabled("nope")  # type: ignore[arg-type]


def test_disable_restores_plain_behaviour(make_chain, server, aia, root_file):
    chain = make_chain()
    srv = server(chain.leaf)
    ctx = enabled(root_file)
    assert aia_ext.disable(ctx) is ctx
    assert not aia_ext.is_enabled(ctx)
    assert verify_code(ctx, srv) == UNABLE_TO_GET_ISSUER_CERT_LOCALLY
    assert fetches_of(aia, chain) == 0
    aia_ext.disable(ctx)  # a second disable is a no-op
    assert aia_ext.enable(ctx) is ctx
    assert verify_code(ctx, srv) == 0


def test_enable_in_place_on_a_plain_context(make_chain, server, aia, root_file, engine):
    """The Quick start's call, on both engines (issue 25, item 3): under the fallback the
    context's class is switched in place, and disable() switches it back."""
    chain = make_chain()
    srv = server(chain.leaf)
    ctx = ssl.create_default_context(cafile=root_file)
    assert aia_ext.enable(ctx) is ctx
    assert aia_ext.engine_of(ctx) == engine
    assert verify_code(ctx, srv) == 0
    assert fetches_of(aia, chain) == 1
    aia_ext.disable(ctx)
    assert type(ctx) is ssl.SSLContext
    assert aia_ext.engine_of(ctx) is None
    assert verify_code(ctx, srv) == UNABLE_TO_GET_ISSUER_CERT_LOCALLY


def test_enable_in_place_on_a_subclass_keeps_its_methods(make_chain, server, root_file, engine):
    class Custom(ssl.SSLContext):
        wrapped = 0

        def wrap_socket(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            Custom.wrapped += 1
            return super().wrap_socket(*args, **kwargs)

    chain = make_chain()
    ctx = Custom(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(root_file)
    aia_ext.enable(ctx)
    assert isinstance(ctx, Custom) and type(ctx).__name__ == "Custom"
    assert verify_code(ctx, server(chain.leaf)) == 0
    assert Custom.wrapped == 1
    aia_ext.disable(ctx)
    assert type(ctx) is Custom


@pytest.mark.skipif(not hasattr(ssl.SSLSocket, "get_verified_chain"), reason="Python 3.13+")
def test_the_verified_chain_is_the_whole_path(make_chain, server, root_file):
    """Issue 25, item 4: the fallback reported the leaf alone for a chain it completed."""
    chain = make_chain()
    srv = server(chain.leaf)
    with socket.create_connection(srv.address, timeout=30) as raw, \
            enabled(root_file).wrap_socket(raw, server_hostname="localhost") as tls:
        verified = tls.get_verified_chain()
        unverified = tls.get_unverified_chain()
    assert len(verified) == 3
    assert verified[:2] == [chain.leaf.der, chain.intermediates[0].der]
    assert unverified == [chain.leaf.der]


def test_enable_twice_is_harmless_and_updates_options(make_chain, server, aia, root_file):
    chain = make_chain()
    ctx = enabled(root_file)
    aia_ext.enable(ctx, max_fetches=0)  # the new options apply
    srv = server(chain.leaf)
    assert verify_code(ctx, srv) == UNABLE_TO_GET_ISSUER_CERT_LOCALLY
    aia_ext.enable(ctx)
    assert verify_code(ctx, srv) == 0
    assert fetches_of(aia, chain) == 1


@pytest.mark.native_only
def test_state_is_released_with_the_context(root_file):
    from aia_ext._private.engines.native import ENGINE

    def collect() -> None:
        for _ in range(5):  # PyPy runs weakref finalizers over several collections
            gc.collect()

    collect()  # contexts of earlier tests may still await collection
    before = len(ENGINE._options)
    contexts = [enabled(root_file) for _ in range(20)]
    assert len(ENGINE._options) == before + 20
    del contexts
    collect()
    # At most as before: a context of an earlier test may be collected only now (PyPy).
    assert len(ENGINE._options) <= before


@pytest.mark.native_only
def test_verify_flags_and_mode_changes_keep_the_callback(make_chain, server, root_file):
    # _ssl never sets the app-verify callback, so changing verify settings
    # after enable() keeps AIA chasing.
    chain = make_chain()
    ctx = enabled(root_file)
    ctx.verify_flags |= ssl.VERIFY_X509_TRUSTED_FIRST
    ctx.verify_mode = ssl.CERT_REQUIRED
    assert verify_code(ctx, server(chain.leaf)) == 0


def test_ip_address_mismatch_is_code_64(make_chain, server, root_file):
    """OpenSSL reports a failed IP check as X509_V_ERR_IP_ADDRESS_MISMATCH; both engines."""
    chain = make_chain()
    ctx = aia_ext.create_default_context(cafile=root_file)
    assert verify_code(ctx, server(chain.leaf), hostname="127.0.0.2") == 64


def test_contexts_without_a_protocol_argument(make_chain, server, root_file):
    """ssl.SSLContext() takes its default protocol from ssl.py (PROTOCOL_TLS on 3.9);
    injection passed None instead (found by CPython's test_ssl on 3.9)."""
    import warnings

    chain = make_chain()
    srv = server(chain.leaf, chain.intermediates)
    aia_ext.inject_into_ssl()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # 3.10+: no protocol
            contexts = [ssl.SSLContext(), aia_ext.SSLContext()]
    finally:
        aia_ext.extract_from_ssl()
    for ctx in contexts:
        assert aia_ext.is_enabled(ctx)
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(root_file)
        assert verify_code(ctx, srv) == 0
