"""The fetch path against hostile AIA servers: strict bounded HTTP, linear parsing, the
destination policy with and without a proxy, a cache directory that can be trusted or is
refused, bounded memos, escaped logs, atomic injection and honest buffer sizes.

Every case fetches over real HTTP from a server on 127.0.0.1 (byte-level responses are
written by the handler itself) and asserts the verify code, the requests the server saw,
and the time or memory the case may take.
"""

from __future__ import annotations

import gc
import logging
import os
import pathlib
import ssl
import sys
import threading
import time

import pytest

import aia_ext
from aia_ext._private.bundle import BundleError, certificates_in_bundle
from aia_ext._private.chase import core
from aia_ext._private.chase.cache import cache
from aia_ext._private.chase.fetch import fetch_url
from aia_ext._private.engines import select
from aia_ext._private.errors import FetchError
from aia_ext._private.options import make_options
from aia_ext._private.testing import issue

from ..helpers import unique_path, verify_code
from .hostile import MARGIN, TIMEOUT, bounded, tight_context

MAX_BODY = 64 * 1024


def _leaf(inter, urls, **kwargs):
    return issue(kwargs.pop("name", "localhost"), inter, aia=urls, dns=["localhost"], **kwargs)


def _raw(*parts: bytes, then_stream: bytes = b"", seconds: float = 0.0):
    """A handler writing exactly these bytes, then ``then_stream`` repeatedly for ``seconds``."""

    def handler(request) -> None:
        try:
            for part in parts:
                request.wfile.write(part)
            request.wfile.flush()
            end = time.monotonic() + seconds
            while then_stream and time.monotonic() < end:
                request.wfile.write(then_stream)
        except OSError:
            pass  # the client gave up, as it should
        request.close_connection = True

    return handler


class _PeakMemory:
    """Peak memory a block allocates: tracemalloc where it exists (CPython), else the
    growth of resident memory sampled every millisecond (PyPy, whose collector and JIT
    keep more resident, hence its looser stated bound)."""

    def __init__(self) -> None:
        try:
            import tracemalloc
        except ImportError:
            tracemalloc = None  # type: ignore[assignment]
        self._tracemalloc = tracemalloc
        self.bound = MAX_BODY + 1024 * 1024 if tracemalloc else 32 * 1024 * 1024
        self.peak = 0
        self._stop = threading.Event()

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _sample(self, baseline: int) -> None:
        while not self._stop.wait(0.001):
            self.peak = max(self.peak, self._rss() - baseline)

    def __enter__(self) -> _PeakMemory:
        gc.collect()
        if self._tracemalloc:
            self._tracemalloc.start()
        else:
            self._thread = threading.Thread(target=self._sample, args=(self._rss(),))
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._tracemalloc:
            self.peak = self._tracemalloc.get_traced_memory()[1]
            self._tracemalloc.stop()
        else:
            self._stop.set()
            self._thread.join()


def _reason(url: str, **options) -> str:
    with pytest.raises(FetchError) as info:
        fetch_url(url, make_options(options), time.monotonic() + 5)
    return str(info.value)


# ---- 1. Malformed framing: refused at once, memory bounded -------------------

STREAM = b"A" * 8192
FRAMINGS = {
    "chunk-size-minus-one": b"-1\r\n",
    "chunk-size-minus-zero": b"-0\r\n",
    "chunk-size-plus": b"+10\r\n",
    "chunk-size-0x-prefix": b"0x10\r\n",
    "chunk-size-garbage": b"zz\r\n",
    "chunk-size-huge": b"ffffffffffffffffffffffff\r\n",
    "chunk-extensions-flood": b"10" + b";e=v" * 10_000 + b"\r\n",
    "chunk-size-without-crlf": b"10" + b"0" * 40_000,
}


@pytest.mark.parametrize("case", sorted(FRAMINGS))
def test_malformed_chunk_framing_is_one_failed_url(case, aia, root, root_file, server, caplog):
    """Issue 12, 1 and 7: http.client read some of these to EOF into memory; now each is
    refused as the bytes arrive, within the timeout, with bounded memory."""
    inter = issue("Intermediate", root, ca=True)
    bad = unique_path()
    bad_url = aia.serve(bad, b"", handler=_raw(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", FRAMINGS[case],
        then_stream=STREAM, seconds=3.0))
    good = unique_path()
    good_url = aia.serve(good, inter.der)
    srv = server(_leaf(inter, [bad_url, good_url]))
    context = tight_context(root_file)
    with _PeakMemory() as memory, caplog.at_level(logging.DEBUG, logger="aia_ext"), \
            bounded(TIMEOUT + MARGIN):
        # The next URL is tried after the malformed one.
        assert verify_code(context, srv) == 0
    assert memory.peak < memory.bound, f"peak {memory.peak} bytes, bound {memory.bound}"
    assert (aia.hits[bad], aia.hits[good]) == (1, 1)
    assert f"{bad_url} (bad HTTP response" in caplog.text or "bad HTTP response" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    # The failure is cached like any network failure: no second request.
    assert verify_code(tight_context(root_file), srv) == 0
    assert aia.hits[bad] == 1


@pytest.mark.parametrize("response", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n folded: header\r\n\r\n",
    b"HTTP/1.1 2000 OK\r\n\r\n",
    b"HTTP/9.9 200 OK\r\n\r\n",
    b"\x16\x03\x01\x02\x00",  # a TLS record where HTTP was expected
    b"HTTP/1.1 200 OK\r\nX: \x00\r\n\r\n",
])
def test_malformed_heads_are_bad_responses(response, aia):
    url = aia.serve(unique_path(), b"", handler=_raw(response))
    with bounded(TIMEOUT + MARGIN):
        assert "bad HTTP response" in _reason(url, timeout=TIMEOUT)


@pytest.mark.parametrize("location,cached", [
    (b"http://[::1", True), (b"http://host:99999/x", True), (b"\x00\x01", True),
    # Well-formed targets the policy refuses: refusals are not cached (they
    # depend on the asking context's options), so the next handshake asks again.
    (b"http://[fe80::1%25lo]/", False), (b"http://" + b"a" * 3000, False),
])
def test_a_malformed_location_is_one_failed_url(location, cached, aia, root, root_file, server,
                                                caplog):
    """Issue 12, 7: a malformed Location raised into the callback's internal-error path,
    logged an ERROR, never tried the next URL and cached nothing."""
    inter = issue("Intermediate", root, ca=True)
    bad = unique_path()
    bad_url = aia.serve(bad, b"", handler=_raw(
        b"HTTP/1.1 302 Found\r\nLocation: " + location + b"\r\nContent-Length: 0\r\n\r\n"))
    good = unique_path()
    good_url = aia.serve(good, inter.der)
    srv = server(_leaf(inter, [bad_url, good_url]))
    with caplog.at_level(logging.DEBUG, logger="aia_ext"), bounded(TIMEOUT + MARGIN):
        assert verify_code(tight_context(root_file), srv) == 0
    assert (aia.hits[bad], aia.hits[good]) == (1, 1)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert verify_code(tight_context(root_file), srv) == 0
    assert aia.hits[bad] == (1 if cached else 2)


def test_one_byte_chunks_cost_bounded_work(aia):
    """A body of one-byte chunks: refused after a bounded number of parser events."""
    url = aia.serve(unique_path(), b"", handler=_raw(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", b"1\r\nA\r\n" * 20_000,
        b"0\r\n\r\n"))
    started = time.monotonic()
    assert "framing events" in _reason(url)
    assert time.monotonic() - started < 0.5


# ---- 2. Parsing is linear, and never freezes other threads -------------------

def _flood(size: int) -> bytes:
    return (b"-----BEGIN CERTIFICATE-----\n" * (size // 28 + 1))[:size]


def _nested_ber(size: int) -> bytes:
    # Indefinite-length constructed elements nested past the reader's depth limit,
    # then padded: every level must be rejected without rescanning the rest.
    head = b"\x30\x80" * 64
    return (head + b"\x04\x01A" * (size // 3))[:size]


BODIES = {
    "pem-begin-flood": _flood,
    "pem-begin-without-newlines": lambda n: (b"-----BEGIN CERTIFICATE-----" * (n // 27 + 1))[:n],
    "pem-blocks-of-junk": lambda n: (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE"
                                     b"-----\n" * (n // 60 + 1))[:n],
    "nested-indefinite-ber": _nested_ber,
}


class _Ticker:
    """The longest gap between the ticks of a thread: how long others were frozen."""

    def __init__(self) -> None:
        self.longest = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        last = time.perf_counter()
        while not self._stop.is_set():
            time.sleep(0.001)
            now = time.perf_counter()
            self.longest = max(self.longest, now - last)
            last = now

    def __enter__(self) -> _Ticker:
        self._thread.start()
        time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.mark.engine_agnostic
@pytest.mark.parametrize("size", [64 * 1024, 1024 * 1024])
@pytest.mark.parametrize("case", sorted(BODIES))
def test_adversarial_bodies_parse_in_linear_time(case, size):
    """Issue 12, 2: 64 KiB of BEGIN lines took ~1.4 s with the GIL held (6.5 s at 128 KiB)."""
    body = BODIES[case](size)
    with _Ticker() as ticker:
        started = time.perf_counter()
        with pytest.raises(BundleError):
            certificates_in_bundle(body, 16)
        elapsed = time.perf_counter() - started
    limit = 0.05 if size <= 64 * 1024 else 0.5
    assert elapsed < limit, f"{elapsed:.3f}s for {size} bytes"
    assert ticker.longest < 0.05 + 0.05, f"other threads frozen {ticker.longest * 1000:.0f} ms"


def test_hostile_pem_body_in_a_handshake(aia, root, root_file, server):
    inter = issue("Intermediate", root, ca=True)
    path = unique_path()
    url = aia.serve(path, _flood(MAX_BODY))
    with bounded(TIMEOUT + MARGIN):
        assert verify_code(tight_context(root_file), server(_leaf(inter, [url]))) == 20
    assert aia.hits[path] == 1


# ---- 3 and 4. The destination policy, with and without a proxy ---------------

METADATA_FORMS = [
    "169.254.169.254", "2852039166", "0251.0376.0251.0376", "0xa9fea9fe", "0xA9.0xFE.0xA9.0xFE",
    "169.254.43518", "[::ffff:169.254.169.254]", "[::ffff:a9fe:a9fe]", "[64:ff9b::a9fe:a9fe]",
    "[2002:a9fe:a9fe::1]", "100.100.100.200", "[fd00:ec2::254]", "168.63.129.16",
    "[fd20:ce::254]", "[fe80::1%25lo]", "0.0.0.0", "[::]",
    # Issue 26, item 6: a trailing dot, which WHATWG URL parsers (Node-based
    # proxies) read as the same address.
    "169.254.169.254.", "2852039166.", "0xa9fea9fe.", "169.254.43518.", "0251.0376.0251.0376.",
]


@pytest.mark.parametrize("host", METADATA_FORMS)
@pytest.mark.parametrize("proxied", [False, True], ids=["direct", "via-proxy"])
def test_metadata_and_link_local_are_refused_in_every_form(host, proxied, aia, monkeypatch):
    """Issue 12, 3 and 4: through a proxy nothing was checked; CGNAT and IPv6 metadata
    were allowed.  Now every textual form is judged as the address it denotes."""
    if proxied:
        monkeypatch.setenv("http_proxy", aia.url(""))
        monkeypatch.delenv("no_proxy", raising=False)
        monkeypatch.delenv("NO_PROXY", raising=False)
    before = aia.total_hits
    reason = _reason(f"http://{host}/latest/meta-data/")
    assert reason.startswith("refused by policy"), reason
    assert aia.total_hits == before  # the proxy was never asked


@pytest.mark.parametrize("host", ["10.1.2.3", "100.64.0.1", "192.168.0.1", "[fd12::1]",
                                  "127.0.0.1", "0x7f000001", "localhost", "a.localhost",
                                  "[::ffff:10.0.0.1]", "198.18.0.1"])
def test_private_destinations_through_a_proxy_follow_allow_private(host, aia, monkeypatch):
    monkeypatch.setenv("http_proxy", aia.url(""))
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    target = f"http://{host}/issuer.der"
    aia.serve(target.replace("[", "%5B") if False else target, b"via proxy")
    before = aia.total_hits
    assert "allow_private=False" in _reason(target, allow_private=False)
    assert aia.total_hits == before


@pytest.mark.parametrize("name", ["metadata.google.internal", "metadata.goog", "instance-data",
                                  "METADATA.GOOGLE.INTERNAL."])
def test_metadata_names_are_refused_through_a_proxy(name, aia, monkeypatch):
    monkeypatch.setenv("http_proxy", aia.url(""))
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    before = aia.total_hits
    assert "cloud metadata" in _reason(f"http://{name}/computeMetadata/v1/")
    assert aia.total_hits == before


def test_url_filter_applies_to_every_hop_through_a_proxy(aia, monkeypatch):
    monkeypatch.setenv("http_proxy", aia.url(""))
    monkeypatch.delenv("no_proxy", raising=False)
    first = f"http://pki.example.invalid{unique_path()}"
    second = f"http://elsewhere.invalid{unique_path()}"
    aia.serve(first, b"", status=302, headers={"Location": second})
    allowed = lambda url: url.startswith("http://pki.example.invalid/")  # noqa: E731
    assert "url_filter" in _reason(first, url_filter=allowed)
    assert aia.hits[first] == 1 and aia.hits[second] == 0


def test_redirect_to_metadata_is_refused(aia):
    path = unique_path()
    url = aia.serve(path, b"", status=302, headers={"Location": "http://2852039166/latest/"})
    assert "cloud metadata endpoint" in _reason(url)


# ---- 5. The cache directory: trusted, or refused ----------------------------

def _served_chain(make_chain, server):
    chain = make_chain()
    return chain, server(chain.leaf)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_planted_fifo_neither_blocks_nor_is_read(make_chain, server, aia, root_file, tmp_path):
    """Issue 12, 5: a FIFO in the cache directory blocked open() forever."""
    chain, srv = _served_chain(make_chain, server)
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir(mode=0o700)
    from aia_ext._private.chase.diskcache import entry_path

    os.mkfifo(entry_path(str(cache_dir), chain.urls[0]))
    with bounded(TIMEOUT + MARGIN):
        assert verify_code(tight_context(root_file, cache_dir=cache_dir), srv) == 0
    assert aia.hits[chain.paths[0]] == 1  # the network was asked instead


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o722])
def test_a_writable_cache_directory_is_refused(mode, make_chain, server, aia, root_file,
                                               tmp_path, caplog):
    """Refused when the options are given (issue 32, item 5), with the reason, not
    with a WARNING on a logger nobody listens to; and again at every use, if it
    became so after the context was made."""
    chain, srv = _served_chain(make_chain, server)
    shared = tmp_path / f"shared-{mode:o}"
    shared.mkdir()
    with pytest.raises(ValueError, match=f"cache_dir: .* cannot be a cache: group or others "
                                         f"can write to it \\(mode {mode:o}\\)"):
        shared.chmod(mode)
        tight_context(root_file, cache_dir=shared)
    shared.chmod(0o700)
    ctx = tight_context(root_file, cache_dir=shared)
    shared.chmod(mode)
    with caplog.at_level(logging.WARNING, logger="aia_ext"):
        for _ in range(2):
            aia_ext.clear_cache()
            assert verify_code(ctx, srv) == 0
    refusals = [r for r in caplog.records if "refusing" in r.getMessage()]
    assert len(refusals) == 1 and "group or others can write" in refusals[0].getMessage()
    assert list(shared.iterdir()) == []  # nothing written there
    assert aia.hits[chain.paths[0]] == 2


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                    reason="changing a directory's owner needs root")
def test_a_cache_directory_owned_by_another_user_is_refused(make_chain, server, aia, root_file,
                                                            tmp_path, caplog):
    chain, srv = _served_chain(make_chain, server)
    other = tmp_path / "other"
    other.mkdir(mode=0o700)
    with pytest.raises(ValueError, match="cannot be a cache: it is owned by uid 65534"):
        os.chown(other, 65534, 65534)  # nobody
        tight_context(root_file, cache_dir=other)
    os.chown(other, os.geteuid(), os.getegid())
    ctx = tight_context(root_file, cache_dir=other)
    os.chown(other, 65534, 65534)  # after the context was made: refused at use
    with caplog.at_level(logging.WARNING, logger="aia_ext"):
        assert verify_code(ctx, srv) == 0
    assert "owned by uid 65534" in caplog.text
    assert list(other.iterdir()) == []
    assert aia.hits[chain.paths[0]] == 1


@pytest.mark.parametrize("planted", ["unrelated-certificate", "same-name-other-key", "symlink"])
def test_a_planted_entry_is_dropped_and_the_network_asked(planted, make_chain, server, aia,
                                                          root, root_file, tmp_path):
    """Issue 12, 5: a well-formed planted entry was used instead of the network, forever."""
    from aia_ext._private.chase.diskcache import _MAGIC, _pem, entry_path

    chain, srv = _served_chain(make_chain, server)
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir(mode=0o700)
    entry = pathlib.Path(entry_path(str(cache_dir), chain.urls[0]))
    if planted == "symlink":
        target = tmp_path / "elsewhere.pem"
        target.write_text(f"{_MAGIC}\n# url: {chain.urls[0]}\n" + _pem(chain.intermediates[0].der))
        entry.symlink_to(target)
    else:
        fake = (issue("Somebody else", root, ca=True) if planted == "unrelated-certificate"
                else issue("Intermediate 0", root, ca=True))  # the name, not the key
        entry.write_text(f"{_MAGIC}\n# url: {chain.urls[0]}\n" + _pem(fake.der))
    assert verify_code(tight_context(root_file, cache_dir=cache_dir), srv) == 0
    assert aia.hits[chain.paths[0]] == 1
    # The verified chain's issuer replaced the planted file.
    assert entry.exists() and not entry.is_symlink()
    assert chain.intermediates[0].der.hex()[:40] in _der_hex(entry)


def _der_hex(path: pathlib.Path) -> str:
    import base64

    lines = [ln for ln in path.read_text().splitlines() if not ln.startswith(("#", "-----"))]
    return base64.b64decode("".join(lines)).hex()


# ---- 6. Memos keyed by data from the network are bounded --------------------

def test_issuer_name_memo_is_bounded(aia, root, root_file, server):
    """Issue 12, 6: a per-URL memo keyed by issuer name grew with every invented name."""
    path = unique_path()
    url = aia.serve(path, issue("Intermediate", root, ca=True).der)
    ctx = tight_context(root_file)
    for index in range(40):
        liar = issue(f"Invented issuer {index}", issue(f"Throwaway {index}", ca=True), ca=True)
        assert verify_code(ctx, server(_leaf(liar, [url]))) == 20
    entry = cache.get(url)
    assert entry is not None and len(entry.derived) <= core.MAX_DERIVED_PER_ENTRY
    assert aia.hits[path] == 1


# ---- 8. Logs: what certificates and URLs say is escaped ---------------------

def test_control_characters_from_certificates_are_escaped_in_logs(aia, root, root_file, server,
                                                                  caplog):
    inter = issue("Intermediate", root, ca=True)
    path = unique_path()
    url = aia.serve(path, b"", status=404)
    leaf = _leaf(inter, [url], name="evil\r\nFAKE LOG LINE\x1b[31m")
    with caplog.at_level(logging.DEBUG, logger="aia_ext"):
        assert verify_code(tight_context(root_file), server(leaf)) == 20
    messages = [r.getMessage() for r in caplog.records]
    assert any("FAKE LOG LINE" in m for m in messages)
    for message in messages:
        assert "\r" not in message and "\n" not in message and "\x1b" not in message, message


# ---- 9. inject_into_ssl() is atomic -------------------------------------------

def test_reinjecting_while_threads_create_contexts(root_file):
    """Issue 12, 9: re-injecting gave 0.4 % of concurrent contexts the default options."""
    refuse_all = lambda url: False  # noqa: E731
    interval = sys.getswitchinterval()
    seen: list[object] = []
    stop = threading.Event()

    def create() -> None:
        while not stop.is_set():
            ctx = ssl.create_default_context(cafile=root_file)
            seen.append(select().options_of(ctx) if select().name == "native"
                        else aia_ext._private.engines.enabled_engine(ctx).options_of(ctx))

    aia_ext.inject_into_ssl(url_filter=refuse_all)
    sys.setswitchinterval(1e-6)
    threads = [threading.Thread(target=create) for _ in range(8)]
    try:
        for thread in threads:
            thread.start()
        end = time.monotonic() + 5
        while len(seen) < 300 and time.monotonic() < end:
            aia_ext.inject_into_ssl(url_filter=refuse_all)
        stop.set()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
        aia_ext.extract_from_ssl()
    assert len(seen) >= 300
    assert all(o is not None and o.url_filter is refuse_all for o in seen)


# ---- 10. Sizes are bytes, whatever buffer a fetcher returns -----------------

@pytest.mark.parametrize("fmt", ["Q", "d", "I"])
def test_fetcher_buffers_are_measured_in_bytes(fmt, make_chain, server, root_file):
    chain = make_chain(serve=False)

    def wide(url: str, timeout: float) -> memoryview:
        return memoryview(bytes(70_000 - 70_000 % 8)).cast(fmt)

    assert verify_code(tight_context(root_file, fetcher=wide), server(chain.leaf)) == 20
    reason = _reason(chain.urls[0], fetcher=wide)
    assert "too large" in reason and "exceeds 65536" in reason
