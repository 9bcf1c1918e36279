"""The built-in fetcher over real HTTP on 127.0.0.1, and a user fetcher in a handshake."""

from __future__ import annotations

import time

import pytest

import aia_ext
from aia_ext._private.chase.fetch import fetch_url
from aia_ext._private.errors import FetchError
from aia_ext._private.options import make_options

from .helpers import drip, fetches_of, unique_path, verify_code


def fetch(url: str, **options: object) -> bytes:
    return fetch_url(url, make_options(options), time.monotonic() + 10)


def reason_of(url: str, **options: object) -> str:
    with pytest.raises(FetchError) as info:
        fetch(url, **options)
    return info.value.reason


def test_plain_get(aia):
    url = aia.serve(unique_path(), b"\x30\x03body")
    assert fetch(url) == b"\x30\x03body"


def test_request_carries_no_credentials_or_cookies(aia):
    path = unique_path()
    aia.serve(path, b"x")
    fetch(aia.url(path))
    method, target, headers = [r for r in aia.requests if r[1] == path][-1]
    assert (method, target) == ("GET", path)
    names = {k.lower() for k in headers}
    assert names == {"host", "accept", "accept-encoding", "user-agent", "connection"}
    assert headers["Accept-Encoding"] == "identity"


def test_relative_and_absolute_redirects_are_followed(aia):
    final = unique_path()
    aia.serve(final, b"certificate")
    hop2 = unique_path()
    aia.serve(hop2, b"", status=302, headers={"Location": aia.url(final)})
    hop1 = unique_path()
    aia.serve(hop1, b"", status=301, headers={"Location": hop2})  # relative
    assert fetch(aia.url(hop1)) == b"certificate"
    assert aia.hits[final] == 1


def test_redirect_limit(aia):
    loop = unique_path()
    aia.serve(loop, b"", status=302, headers={"Location": loop})
    assert reason_of(aia.url(loop)) == "too many redirects"
    assert aia.hits[loop] == 4  # the first request and three redirects
    assert reason_of(aia.url(loop), max_redirects=0) == "too many redirects"


@pytest.mark.parametrize("location,expected", [
    ("file:///etc/passwd", "scheme 'file'"),
    ("https://127.0.0.1/ca.der", "https not enabled"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://[fe80::1]/ca.der", "link-local"),
    ("http://0.0.0.0:1/ca.der", "unspecified"),
])
def test_redirects_are_rechecked_by_policy(aia, location, expected):
    hop = unique_path()
    aia.serve(hop, b"", status=302, headers={"Location": location})
    assert expected in reason_of(aia.url(hop))


def test_size_limit_by_content_length(aia):
    url = aia.serve(unique_path(), b"x" * 70_000)
    assert reason_of(url) == "too large"
    assert len(fetch(url, max_response_bytes=80_000)) == 70_000


def test_size_limit_on_an_endless_chunked_body(aia):
    def endless(handler):
        handler.send_response(200)
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        try:
            for _ in range(100_000):
                handler.wfile.write(b"4000\r\n" + b"x" * 0x4000 + b"\r\n")
        except OSError:
            pass  # the client hung up, as it should

    url = aia.serve(unique_path(), b"", handler=endless)
    assert reason_of(url) == "too large"


def test_compressed_bodies_are_never_inflated(aia):
    url = aia.serve(unique_path(), b"\x1f\x8b" + b"\0" * 30, headers={"Content-Encoding": "gzip"})
    assert reason_of(url) == "bad HTTP response"


def test_http_error_status(aia):
    assert reason_of(aia.serve(unique_path(), b"gone", status=410)) == "HTTP 410"


def test_slow_drip_is_cut_at_the_timeout(aia):
    url = aia.serve(unique_path(), b"", handler=drip(0.1, 1000))
    started = time.monotonic()
    assert reason_of(url, timeout=0.6) == "timeout"
    assert time.monotonic() - started < 0.6 + 0.5


def test_http_proxy_from_the_environment(aia, monkeypatch):
    # The AIA server doubles as a forward proxy: it is asked for the absolute URL.
    target = f"http://ca.example.invalid{unique_path()}"
    aia.serve(target, b"via proxy")
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{aia.port}")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    assert fetch(target) == b"via proxy"
    assert aia.hits[target] == 1


def test_no_proxy_bypasses_the_proxy(aia, monkeypatch):
    url = aia.serve(unique_path(), b"direct")
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    assert fetch(url) == b"direct"


def test_user_fetcher_goes_through_cache_and_limits(make_chain, server, root_file):
    chain = make_chain(serve=False)
    calls: list[tuple[str, float]] = []

    def fetcher(url: str, timeout: float) -> bytes:
        calls.append((url, timeout))
        return chain.intermediates[0].der

    ctx = aia_ext.create_default_context(cafile=root_file, fetcher=fetcher, timeout=3.0)
    srv = server(chain.leaf)
    assert verify_code(ctx, srv) == 0
    assert verify_code(ctx, srv) == 0  # second time from the cache
    assert [u for u, _ in calls] == [chain.urls[0]]
    assert 0 < calls[0][1] <= 3.0


def test_user_fetcher_errors_and_oversize_fail_closed(make_chain, server, root_file, aia):
    chain = make_chain(serve=False)

    def too_big(url: str, timeout: float) -> bytes:
        return b"\x30" * 100_000

    def raises(url: str, timeout: float) -> bytes:
        raise ConnectionError("boom")

    srv = server(chain.leaf)
    for fetcher in (too_big, raises):
        aia_ext.clear_cache()
        ctx = aia_ext.create_default_context(cafile=root_file, fetcher=fetcher)
        assert verify_code(ctx, srv) == 20
    assert fetches_of(aia, chain) == 0


def test_user_fetcher_is_still_subject_to_url_policy(server, root, root_file):
    from aia_ext._private.testing import issue

    inter = issue("Intermediate", root, ca=True)
    leaf = issue("localhost", inter, aia=["file:///etc/passwd"], dns=["localhost"])
    calls: list[str] = []

    def fetcher(url: str, timeout: float) -> bytes:
        calls.append(url)
        return inter.der

    ctx = aia_ext.create_default_context(cafile=root_file, fetcher=fetcher)
    assert verify_code(ctx, server(leaf)) == 20
    assert calls == []
