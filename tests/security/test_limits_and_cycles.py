"""Every fetch limit enforced in a real handshake, and caIssuers cycles cut short."""

from __future__ import annotations

import logging

import pytest

from aia_ext._private.testing import Cert, issue

from ..helpers import drip, unique_path, verify_code
from .hostile import DEADLINE, MARGIN, TIMEOUT, bounded, tight_context


def _leaf(inter: Cert, urls: list[str]) -> Cert:
    return issue("localhost", inter, aia=urls, dns=["localhost"])


def test_slow_drip_is_cut_at_the_per_fetch_timeout(aia, root, root_file, server, healthy):
    inter = issue("Intermediate", root, ca=True)
    url = aia.serve(unique_path(), b"", handler=drip(1.0, 60))
    ctx = tight_context(root_file, timeout=TIMEOUT, deadline=DEADLINE * 5)
    with bounded(TIMEOUT + MARGIN):
        assert verify_code(ctx, server(_leaf(inter, [url]))) == 20
    healthy()


def test_slow_drips_are_cut_at_the_overall_deadline(aia, root, root_file, server, healthy):
    inter = issue("Intermediate", root, ca=True)
    urls = [aia.serve(unique_path(), b"", handler=drip(1.0, 60)) for _ in range(5)]
    # Five URLs x 1 s each would take 5 s; the 2 s deadline stops it first.
    with bounded(DEADLINE + MARGIN):
        assert verify_code(tight_context(root_file), server(_leaf(inter, urls))) == 20
    assert sum(aia.hits[aia.path_of(u)] for u in urls) <= 3
    healthy()


def test_240_caissuers_urls_are_capped(aia, root, root_file, server):
    inter = issue("Intermediate", root, ca=True)
    urls = [aia.url(unique_path()) for _ in range(240)]  # all 404
    with bounded():
        assert verify_code(tight_context(root_file), server(_leaf(inter, urls))) == 20
    hits = [aia.hits[aia.path_of(u)] for u in urls]
    assert sum(hits) == 5 and hits[:5] == [1] * 5  # the first max_urls_per_cert, in order


def test_max_urls_per_cert_option(aia, root, root_file, server):
    inter = issue("Intermediate", root, ca=True)
    urls = [aia.url(unique_path()) for _ in range(4)] + [aia.serve(unique_path(), inter.der)]
    srv = server(_leaf(inter, urls))
    assert verify_code(tight_context(root_file, max_urls_per_cert=2), srv) == 20
    assert verify_code(tight_context(root_file, max_urls_per_cert=5), srv) == 0


def test_fetches_per_verification_are_capped(aia, root, root_file, server, make_chain):
    chain = make_chain(levels=3)  # three missing levels, three fetches needed
    srv = server(chain.leaf)
    assert verify_code(tight_context(root_file, max_fetches=2), srv) == 20
    assert [aia.hits[p] for p in chain.paths] == [1, 1, 0]
    # The first two are cached now, so the same budget completes the chain.
    assert verify_code(tight_context(root_file, max_fetches=2), srv) == 0
    assert [aia.hits[p] for p in chain.paths] == [1, 1, 1]


def test_max_fetches_zero_uses_the_cache_only(aia, root_file, server, make_chain):
    chain = make_chain()
    srv = server(chain.leaf)
    assert verify_code(tight_context(root_file, max_fetches=0), srv) == 20
    assert aia.hits[chain.paths[0]] == 0
    assert verify_code(tight_context(root_file), srv) == 0  # fills the cache
    assert verify_code(tight_context(root_file, max_fetches=0), srv) == 0


@pytest.mark.parametrize("location,reason", [
    (None, "too many redirects"),  # a loop
    ("file:///etc/passwd", "scheme 'file' is not fetched"),
    ("https://127.0.0.1:1/i.der", "https not enabled"),
    ("http://169.254.169.254/latest/meta-data/", "link-local address 169.254.169.254"),
])
def test_redirects(location, reason, aia, root, root_file, server, caplog):
    inter = issue("Intermediate", root, ca=True)
    path = unique_path()
    url = aia.serve(path, b"", status=302, headers={"Location": location or path})
    with caplog.at_level(logging.WARNING, logger="aia_ext"), bounded():
        assert verify_code(tight_context(root_file), server(_leaf(inter, [url]))) == 20
    assert aia.hits[path] == (4 if location is None else 1)
    assert reason in caplog.text


def test_link_local_caissuers_is_refused_without_connecting(aia, root, root_file, server,
                                                             caplog):
    inter = issue("Intermediate", root, ca=True)
    leaf = _leaf(inter, ["http://169.254.169.254/latest/meta-data/iam/"])
    with caplog.at_level(logging.WARNING, logger="aia_ext"), bounded(MARGIN):
        assert verify_code(tight_context(root_file), server(leaf)) == 20
    assert "refused by policy: link-local address 169.254.169.254" in caplog.text


def test_allow_private_false_refuses_loopback(aia, root_file, server, make_chain, caplog):
    chain = make_chain()
    srv = server(chain.leaf)
    with caplog.at_level(logging.WARNING, logger="aia_ext"):
        assert verify_code(tight_context(root_file, allow_private=False), srv) == 20
    assert aia.hits[chain.paths[0]] == 0
    assert "private address 127.0.0.1 (allow_private=False)" in caplog.text
    assert verify_code(tight_context(root_file), srv) == 0


def test_hostnames_are_resolved_once_and_checked(aia, root, root_file, server, caplog):
    # "localhost" resolves to loopback: refused under allow_private=False even
    # though the URL names no address.
    inter = issue("Intermediate", root, ca=True)
    url = f"http://localhost:{aia.port}{unique_path()}"
    aia.serve(aia.path_of(url), inter.der)
    srv = server(_leaf(inter, [url]))
    with caplog.at_level(logging.WARNING, logger="aia_ext"):
        assert verify_code(tight_context(root_file, allow_private=False), srv) == 20
    assert "(allow_private=False)" in caplog.text
    assert verify_code(tight_context(root_file), srv) == 0


def test_url_filter_allowlist_in_a_handshake(aia, root_file, server, make_chain):
    chain = make_chain()
    srv = server(chain.leaf)
    deny = tight_context(root_file, url_filter=lambda u: u.startswith("http://pki.corp/"))
    assert verify_code(deny, srv) == 20
    assert aia.hits[chain.paths[0]] == 0
    allow = tight_context(root_file, url_filter=lambda u: u.startswith(aia.url("/ca/")))
    assert verify_code(allow, srv) == 0


def test_a_b_a_caissuers_loop_ends_quickly(aia, root, root_file, server):
    url_a, url_b = aia.url(unique_path()), aia.url(unique_path())
    seed_b = issue("Loop B", ca=True)  # only to own B's key and name
    a = issue("Loop A", seed_b, ca=True, aia=[url_b])
    b = issue("Loop B", a, ca=True, aia=[url_a], key=seed_b.key)
    aia.serve(aia.path_of(url_a), a.der)
    aia.serve(aia.path_of(url_b), b.der)
    with bounded(MARGIN):
        assert verify_code(tight_context(root_file), server(_leaf(a, [url_a]))) == 20
    assert (aia.hits[aia.path_of(url_a)], aia.hits[aia.path_of(url_b)]) == (1, 1)


def test_issuer_pointing_back_at_the_leafs_url(aia, root_file, server):
    url = aia.url(unique_path())
    stranger = issue("untrusted root", ca=True)
    inter = issue("Intermediate", stranger, ca=True, aia=[url])  # its AIA: the same URL
    aia.serve(aia.path_of(url), inter.der)
    with bounded(MARGIN):
        assert verify_code(tight_context(root_file), server(_leaf(inter, [url]))) == 20
    assert aia.hits[aia.path_of(url)] == 1


def test_fetched_copy_of_a_served_certificate_is_no_progress(aia, root, root_file, server):
    # The server sends leaf + lower intermediate; the lower one's caIssuers
    # URL serves... the lower intermediate again.
    url = aia.url(unique_path())
    upper = issue("Upper", root, ca=True)
    lower = issue("Lower", upper, ca=True, aia=[url])
    aia.serve(aia.path_of(url), lower.der)
    leaf = issue("localhost", lower, dns=["localhost"])
    with bounded(MARGIN):
        assert verify_code(tight_context(root_file), server(leaf, [lower])) == 20
    assert aia.hits[aia.path_of(url)] == 1


def test_failure_is_reported_once_with_subject_urls_and_reasons(aia, root, root_file, server,
                                                                caplog):
    inter = issue("Intermediate", root, ca=True)
    gone = aia.url(unique_path())  # 404
    junk = aia.serve(unique_path(), b"<html>oops</html>")
    leaf = issue("reported.example", inter, aia=["ldap://ldap.example/cn=ca", gone, junk],
                 dns=["localhost"])
    with caplog.at_level(logging.DEBUG, logger="aia_ext"):
        assert verify_code(tight_context(root_file), server(leaf)) == 20
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    line = warnings[0]
    assert "CN=reported.example" in line and "verify error 20 at depth 0" in line
    assert "ldap://ldap.example/cn=ca: refused by policy: scheme 'ldap' is not fetched" in line
    assert f"{gone}: HTTP 404" in line
    assert f"{junk}: parse error: no certificate in the response" in line
    fetch_lines = [r for r in caplog.records if r.levelno == logging.DEBUG
                   and r.getMessage().startswith("fetch of ")]
    assert len(fetch_lines) == 2  # fetches are logged at DEBUG


def test_finished_reports_are_bounded_in_bytes(aia, root, root_file, server):
    """Issue 32, item 11: each failed handshake's report kept the DER path it built, 1,024
    of them, so hostile 30 KB certificates grew memory by ~31 KiB per handshake up to
    ~32 MiB.  The store now holds at most MAX_FINISHED_BYTES (8 MiB)."""
    import gc
    import socket
    import ssl

    from aia_ext._private.chase import core, finished

    inter = issue("Intermediate", root, ca=True)
    names = ["localhost"] + [f"name-{i:05d}.bulk.example" for i in range(1500)]
    leaf = issue("localhost", inter, aia=[aia.url(unique_path())], dns=names)  # a 404
    assert len(leaf.der) > 30_000
    srv = server(leaf)
    ctx = tight_context(root_file)

    def fail_once() -> None:
        with socket.create_connection(srv.address, timeout=30) as raw:
            with pytest.raises(ssl.SSLCertVerificationError) as info:
                ctx.wrap_socket(raw, server_hostname="localhost")
        assert info.value.verify_code == 20

    full = finished.MAX_FINISHED_BYTES // len(leaf.der) + 20
    try:
        import tracemalloc
    except ImportError:  # PyPy: the bytes are measured on CPython; the store's count here
        tracemalloc = None  # type: ignore[assignment]
    if tracemalloc is not None:
        tracemalloc.start()  # before the store fills: what it drops later is counted
    try:
        for _ in range(full):
            fail_once()
        kept, held = finished.held()
        assert held <= finished.MAX_FINISHED_BYTES and kept < full
        gc.collect()
        before = tracemalloc.get_traced_memory()[0] if tracemalloc is not None else 0
        for _ in range(300):
            fail_once()
        gc.collect()  # a failed handshake's exception and frames form cycles
        grown = tracemalloc.get_traced_memory()[0] - before if tracemalloc is not None else 0
    finally:
        if tracemalloc is not None:
            tracemalloc.stop()
    # 300 more failures at ~31 KiB each would be ~9 MiB; the oldest reports go instead.
    # (Other state, bounded too, may still fill a little: not by a report per failure.)
    assert grown < 2 * 1024 * 1024, f"{grown} bytes more after 300 failed handshakes"
    kept, held = finished.held()
    assert held <= finished.MAX_FINISHED_BYTES
    gc.collect()
    live = sum(1 for o in gc.get_objects() if isinstance(o, core.Chase))
    assert live <= kept + 2  # no report outlives the store (one may be in flight)


@pytest.mark.parametrize("cache", ["memory", "disk"])
@pytest.mark.parametrize("order", ["strict first", "permissive first"])
def test_allow_private_applies_to_cached_answers(order, cache, aia, root_file, server,
                                                 make_chain, tmp_path):
    """Issue 32, item 6: a context with allow_private=False refused a private caIssuers
    URL's fetch, yet used the answer another context had fetched from it: the verdict
    depended on which context ran first.  Now it is the same either way, as with
    url_filter, from the memory cache and from a shared cache_dir alike."""
    import socket
    import ssl

    import aia_ext

    chain = make_chain()
    srv = server(chain.leaf)
    shared = {"cache_dir": str(tmp_path / "cache")} if cache == "disk" else {}

    def strict() -> tuple[int, tuple[str, ...]]:
        ctx = tight_context(root_file, allow_private=False, **shared)
        with socket.create_connection(srv.address, timeout=30) as raw:
            with pytest.raises(ssl.SSLCertVerificationError) as info:
                ctx.wrap_socket(raw, server_hostname="localhost")
        report = info.value.aia_report  # type: ignore[attr-defined]
        return info.value.verify_code, tuple(f.reason for f in report.failed)

    expected = (20, ("refused by policy: private address 127.0.0.1 (allow_private=False): "
                     "loopback",))
    if order == "strict first":
        assert strict() == expected
        assert aia.hits[chain.paths[0]] == 0
    assert verify_code(tight_context(root_file, **shared), srv) == 0
    assert aia.hits[chain.paths[0]] == 1
    if cache == "disk":
        aia_ext.clear_cache()  # only the disk keeps the answer now
    assert strict() == expected
    assert verify_code(tight_context(root_file, **shared), srv) == 0
    assert aia.hits[chain.paths[0]] == 1  # the permissive context still uses it
