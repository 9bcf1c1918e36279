"""inject_into_ssl, pip end to end, more clients, intermediates pool, disk cache, prefetch."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import os
import smtplib
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
import urllib.error
import urllib.request
import zipfile

import pytest

import aia_ext
from aia_ext._private.testing import AIAServer, issue, write_pem

from .helpers import fetches_of, unique_path, verify_code

PARTIAL_CHAIN = getattr(ssl, "VERIFY_X509_PARTIAL_CHAIN", 0x80000)


@pytest.fixture
def injected():
    aia_ext.inject_into_ssl()
    yield
    aia_ext.extract_from_ssl()


# ---------------------------------------------------------------- injection

def test_inject_enables_new_contexts_and_extract_restores_exactly(make_chain, server,
                                                                   root_file):
    stdlib_new = ssl.SSLContext.__dict__["__new__"]
    chain = make_chain()
    srv = server(chain.leaf)
    before = ssl.create_default_context(cafile=root_file)
    aia_ext.inject_into_ssl()
    aia_ext.inject_into_ssl()  # idempotent
    try:
        assert aia_ext.is_injected()
        after = ssl.create_default_context(cafile=root_file)
        assert aia_ext.is_enabled(after) and not aia_ext.is_enabled(before)
        assert verify_code(after, srv) == 0
        assert verify_code(before, srv) == 20  # existing contexts are left alone
    finally:
        aia_ext.extract_from_ssl()
    aia_ext.extract_from_ssl()  # idempotent
    assert ssl.SSLContext.__dict__["__new__"] is stdlib_new
    assert not aia_ext.is_enabled(ssl.create_default_context(cafile=root_file))


def test_inject_and_extract_are_thread_safe():
    stdlib_new = ssl.SSLContext.__dict__["__new__"]
    barrier = threading.Barrier(8)

    def churn(i: int) -> None:
        barrier.wait()
        for _ in range(50):
            (aia_ext.inject_into_ssl if i % 2 else aia_ext.extract_from_ssl)()

    threads = [threading.Thread(target=churn, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    aia_ext.extract_from_ssl()
    assert ssl.SSLContext.__dict__["__new__"] is stdlib_new
    aia_ext.inject_into_ssl()
    try:
        assert aia_ext.is_enabled(ssl.create_default_context())
    finally:
        aia_ext.extract_from_ssl()


def test_injected_urllib3_and_requests_defaults(make_chain, server, root_file, aia, injected):
    urllib3 = pytest.importorskip("urllib3")
    requests = pytest.importorskip("requests")
    chain = make_chain()
    srv = server(chain.leaf)
    # urllib3 builds its own context through util.ssl_.create_urllib3_context.
    with urllib3.PoolManager(ca_certs=root_file) as pool:
        assert pool.request("GET", srv.url).data == b"ok\n"
    assert requests.get(srv.url, verify=root_file, timeout=30).text == "ok\n"
    assert fetches_of(aia, chain) == 1


@pytest.mark.parametrize("order", ["truststore-first", "aia-first"])
def test_composes_with_truststore(order, make_chain, server, root_file, monkeypatch):
    truststore = pytest.importorskip("truststore")
    monkeypatch.setenv("SSL_CERT_FILE", root_file)  # truststore's Linux trust store
    chain = make_chain()
    srv = server(chain.leaf)
    first, second = ((truststore.inject_into_ssl, aia_ext.inject_into_ssl)
                     if order == "truststore-first" else
                     (aia_ext.inject_into_ssl, truststore.inject_into_ssl))
    first()
    second()
    try:
        ctx = ssl.create_default_context()
        assert type(ctx).__module__.startswith("truststore")
        assert verify_code(ctx, srv) == 0
    finally:
        truststore.extract_from_ssl()
        aia_ext.extract_from_ssl()


# ---------------------------------------------------------------- pip, end to end

def _wheel(name: str, version: str) -> tuple[str, bytes]:
    """A minimal valid pure-Python wheel."""
    dist = f"{name.replace('-', '_')}-{version}"
    files = {
        f"{name.replace('-', '_')}/__init__.py": b"VALUE = 42\n",
        f"{dist}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\n"
                                      f"Version: {version}\n".encode(),
        f"{dist}.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: aia_ext tests\n"
                                   b"Root-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(
        f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}\n"
        for path, data in files.items()) + f"{dist}.dist-info/RECORD,,\n"
    files[f"{dist}.dist-info/RECORD"] = record.encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for path, data in files.items():
            zf.writestr(path, data)
    return f"{dist}-py3-none-any.whl", buf.getvalue()


@pytest.fixture
def package_index(make_chain, tmp_path):
    """A package index over HTTPS from a server that sends only its leaf."""
    chain = make_chain()
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(write_pem(tmp_path / "leaf.pem", chain.leaf), _key(tmp_path, chain.leaf))
    filename, wheel = _wheel("aia-ext-demo-pkg", "1.0")
    digest = hashlib.sha256(wheel).hexdigest()
    with AIAServer(tls) as index:
        index.serve("/simple/aia-ext-demo-pkg/",
                    f'<html><body><a href="/files/{filename}#sha256={digest}">{filename}</a>'
                    "</body></html>".encode(), content_type="text/html")
        index.serve(f"/files/{filename}", wheel, content_type="application/octet-stream")
        yield f"https://localhost:{index.port}/simple/", filename, chain


def _key(tmp_path, cert) -> str:
    path = tmp_path / "leaf.key"
    path.write_bytes(cert.key_pem)
    return str(path)  # str: PyPy's ssl takes no Path


def _pip_download(index_url: str, dest, root_file: str, pythonpath: str | None, **extra: str):
    # No inherited trust settings: requests lets REQUESTS_CA_BUNDLE or
    # CURL_CA_BUNDLE override pip's own --cert, and machines often set them.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PIP_", "PYTHON")) and "CERT" not in k and "CA_BUNDLE" not in k
           and k.lower() not in ("https_proxy", "http_proxy")}
    # SSL_CERT_FILE for pips that verify with truststore (24.2+), --cert for
    # older ones, which use certifi's bundle otherwise.
    env.update(SSL_CERT_FILE=root_file, PIP_CERT=root_file, PIP_CONFIG_FILE=os.devnull,
               PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    env.update(extra)
    return subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir", "--retries",
         "0", "--timeout", "20", "--index-url", index_url, "-d", str(dest),
         "aia-ext-demo-pkg"],
        capture_output=True, text=True, env=env, timeout=180)


def test_pip_download_fails_plainly_and_succeeds_injected(package_index, root_file, tmp_path,
                                                          aia):
    index_url, filename, chain = package_index
    plain = _pip_download(index_url, tmp_path / "plain", root_file, None)
    assert plain.returncode != 0
    assert "CERTIFICATE_VERIFY_FAILED" in plain.stdout + plain.stderr
    assert not (tmp_path / "plain" / filename).exists()
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import aia_ext\naia_ext.inject_into_ssl()\n")
    injected = _pip_download(index_url, tmp_path / "injected", root_file, str(site))
    assert injected.returncode == 0, injected.stdout + injected.stderr
    assert (tmp_path / "injected" / filename).exists()
    assert fetches_of(aia, chain) == 1


@pytest.fixture
def inject_hook():
    """The AIA_EXT_INJECT .pth in this interpreter's site-packages, as the wheel installs it.

    An editable or source checkout has none: the test puts the source file there
    for its duration (and removes it), so that pip's interpreter starts with it.
    """
    import pathlib
    import sysconfig

    installed = pathlib.Path(sysconfig.get_paths()["purelib"]) / "aia_ext-inject.pth"
    if installed.exists():
        yield installed
        return
    source = pathlib.Path(__file__).resolve().parent.parent / "src" / "aia_ext-inject.pth"
    installed.write_text(source.read_text())
    try:
        yield installed
    finally:
        installed.unlink()


def test_pip_download_with_aia_ext_inject(package_index, root_file, tmp_path, aia, inject_hook):
    """Issue 14, 7: one-step activation, no file to write: AIA_EXT_INJECT=1 pip ..."""
    index_url, filename, chain = package_index
    plain = _pip_download(index_url, tmp_path / "plain", root_file, None)
    assert plain.returncode != 0 and "CERTIFICATE_VERIFY_FAILED" in plain.stdout + plain.stderr
    injected = _pip_download(index_url, tmp_path / "injected", root_file, None,
                             AIA_EXT_INJECT="1")
    assert injected.returncode == 0, injected.stdout + injected.stderr
    assert (tmp_path / "injected" / filename).exists()
    assert fetches_of(aia, chain) == 1


# ---------------------------------------------------------------- more clients

def test_requests_aia_adapter(make_chain, server, root_file, aia, monkeypatch):
    requests = pytest.importorskip("requests")
    from aia_ext.requests import AIAAdapter

    # requests turns verify=True into these when set (an explicit user choice).
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)

    chain = make_chain()
    ctx = aia_ext.create_default_context(cafile=root_file)
    with requests.Session() as session:
        session.mount("https://", AIAAdapter(ctx))
        assert session.get(server(chain.leaf).url, timeout=30).text == "ok\n"
    assert fetches_of(aia, chain) == 1
    assert len(ctx.get_ca_certs()) == 1  # requests did not load certifi into it


def test_httpx_async(make_chain, server, root_file, aia):
    httpx = pytest.importorskip("httpx")
    chain = make_chain()
    ctx = aia_ext.create_default_context(cafile=root_file)

    async def get() -> str:
        async with httpx.AsyncClient(verify=ctx) as client:
            return (await client.get(server(chain.leaf).url)).text

    assert asyncio.run(get()) == "ok\n"
    assert fetches_of(aia, chain) == 1


def test_aiohttp_with_aprefetch_off_the_loop(make_chain, server, root_file, aia):
    aiohttp = pytest.importorskip("aiohttp")
    chain = make_chain()
    srv = server(chain.leaf)
    ctx = aia_ext.create_default_context(cafile=root_file)

    async def main() -> tuple[object, str]:
        report = await aia_ext.aprefetch(srv.url, context=ctx)
        async with aiohttp.ClientSession() as session, \
                session.get(srv.url, ssl=ctx) as response:
            return report, await response.text()

    report, text = asyncio.run(main())
    assert text == "ok\n"
    assert report is not None and report.added[0].source == "network"
    assert fetches_of(aia, chain) == 1  # the aiohttp handshake hit the cache


def test_prefetch_argument_checks(root_file):
    with pytest.raises(ValueError, match="enabled"):
        aia_ext.prefetch("localhost:1", context=ssl.create_default_context())
    with pytest.raises(ValueError, match="https"):
        aia_ext.prefetch("ftp://example.com/", context=aia_ext.create_default_context())


def test_websockets(make_chain, root_file, aia, tmp_path):
    websockets = pytest.importorskip("websockets")
    from websockets.asyncio.client import connect
    from websockets.asyncio.server import serve

    chain = make_chain()
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(write_pem(tmp_path / "l.pem", chain.leaf),
                               _key(tmp_path, chain.leaf))
    ctx = aia_ext.create_default_context(cafile=root_file)

    async def echo(ws) -> None:
        async for message in ws:
            await ws.send(message)

    async def main() -> str:
        async with serve(echo, "127.0.0.1", 0, ssl=server_ctx) as srv:
            port = srv.sockets[0].getsockname()[1]
            async with connect(f"wss://localhost:{port}/", ssl=ctx) as ws:
                await ws.send("hello")
                return str(await ws.recv())

    assert asyncio.run(main()) == "hello"
    assert websockets is not None and fetches_of(aia, chain) == 1


class _StartTLSServer:
    """Just enough SMTP for EHLO, STARTTLS, EHLO and QUIT."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.tls_ok = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        conn.settimeout(30)
        reader = conn.makefile("rb")
        conn.sendall(b"220 localhost ESMTP test\r\n")
        stream, tls = conn, None
        while True:
            line = reader.readline()
            if not line:
                break
            verb = line.strip().split(b" ")[0].upper()
            if verb in (b"EHLO", b"HELO"):
                stream.sendall(b"250-localhost\r\n250 STARTTLS\r\n")
            elif verb == b"STARTTLS":
                stream.sendall(b"220 ready\r\n")
                try:
                    tls = self.context.wrap_socket(conn, server_side=True)
                except (OSError, ssl.SSLError):
                    break
                self.tls_ok = True
                stream, reader = tls, tls.makefile("rb")
            elif verb == b"QUIT":
                stream.sendall(b"221 bye\r\n")
                break
            else:
                stream.sendall(b"250 ok\r\n")
        (tls or conn).close()
        self.sock.close()


def test_smtplib_starttls(make_chain, root_file, aia, tmp_path):
    chain = make_chain()
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(write_pem(tmp_path / "l.pem", chain.leaf),
                               _key(tmp_path, chain.leaf))
    srv = _StartTLSServer(server_ctx)
    with smtplib.SMTP("localhost", srv.port, timeout=30) as smtp:
        smtp.starttls(context=aia_ext.create_default_context(cafile=root_file))
        assert smtp.ehlo()[0] == 250
    srv.thread.join(10)
    assert srv.tls_ok and fetches_of(aia, chain) == 1


# ---------------------------------------------------------------- intermediates pool

def test_pooled_intermediate_needs_no_fetch(make_chain, server, root_file, aia, tmp_path):
    chain = make_chain()
    pool_file = write_pem(tmp_path / "pool.pem", *chain.intermediates)
    for pool in (pool_file, chain.intermediates[0].der, [chain.intermediates[0].pem]):
        ctx = aia_ext.create_default_context(cafile=root_file, intermediates=pool)
        with socket.create_connection(server(chain.leaf).address) as raw, \
                ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            report = aia_ext.report(tls)
        assert report is not None
        assert [(f.source, f.url) for f in report.added] == [("intermediates pool", "")]
    assert fetches_of(aia, chain) == 0


def test_pooled_intermediate_is_not_an_anchor(server, root_file, aia):
    stranger = issue("untrusted root", ca=True)
    inter = issue("Pooled Intermediate", stranger, ca=True)
    leaf = issue("localhost", inter, dns=["localhost"])
    ctx = aia_ext.create_default_context(cafile=root_file, intermediates=inter.der)
    ctx.verify_flags |= PARTIAL_CHAIN
    assert verify_code(ctx, server(leaf)) == 20


def test_bad_intermediates_option(tmp_path):
    with pytest.raises(ValueError, match="intermediates"):
        aia_ext.create_default_context(intermediates=42)
    with pytest.raises(ValueError, match="cannot read"):
        aia_ext.create_default_context(intermediates=str(tmp_path / "missing.pem"))
    with pytest.raises(ValueError, match="no certificate"):
        aia_ext.create_default_context(intermediates=b"not a certificate")


# ---------------------------------------------------------------- disk cache

_CHILD = textwrap.dedent("""
    import socket, sys, aia_ext
    # The per-URL entries are what is shared here; learned intermediates
    # (issue 23, test_learned.py) would answer the second process first.
    ctx = aia_ext.create_default_context(cafile=sys.argv[1], learn_intermediates=False)
    with socket.create_connection(("127.0.0.1", int(sys.argv[2]))) as raw, \\
            ctx.wrap_socket(raw, server_hostname="localhost") as tls:
        report = aia_ext.report(tls)
    print(report.added[0].source)
""")


def _child(root_file: str, port: int, cache_dir) -> str:
    env = dict(os.environ, AIA_EXT_CACHE_DIR=str(cache_dir))
    result = subprocess.run([sys.executable, "-c", _CHILD, root_file, str(port)],
                            capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_disk_cache_is_shared_between_processes(make_chain, server, root_file, aia, tmp_path):
    chain = make_chain()
    srv = server(chain.leaf)
    assert _child(root_file, srv.port, tmp_path) == "network"
    assert fetches_of(aia, chain) == 1
    assert _child(root_file, srv.port, tmp_path) == "disk cache"
    assert fetches_of(aia, chain) == 1  # the second process fetched nothing
    assert [p.suffix for p in tmp_path.iterdir()] == [".pem"]  # no temp files left


def test_disk_cache_ignores_truncated_and_foreign_files(make_chain, server, root_file, aia,
                                                        tmp_path):
    chain = make_chain()
    srv = server(chain.leaf)
    assert _child(root_file, srv.port, tmp_path) == "network"
    [entry] = list(tmp_path.iterdir())
    entry.write_bytes(entry.read_bytes()[:200])  # truncated
    (tmp_path / "foreign.pem").write_bytes(chain.intermediates[0].pem)
    assert _child(root_file, srv.port, tmp_path) == "network"
    assert fetches_of(aia, chain) == 2


def test_disk_cache_stores_only_what_verified(server, root_file, aia, tmp_path):
    stranger = issue("untrusted root", ca=True)
    inter = issue("Intermediate", stranger, ca=True)
    url = aia.serve(unique_path(), inter.der)
    leaf = issue("localhost", inter, aia=[url], dns=["localhost"])
    ctx = aia_ext.create_default_context(cafile=root_file, cache_dir=tmp_path)
    assert verify_code(ctx, server(leaf)) == 20
    assert list(tmp_path.iterdir()) == []


def test_enable_on_a_truststore_context_really_chases(make_chain, server, root_file, aia,
                                                      monkeypatch, engine):
    """Issue 14, 3: enable(truststore.SSLContext) returned, is_enabled() said True, and
    nothing was ever chased."""
    truststore = pytest.importorskip("truststore")
    monkeypatch.setenv("SSL_CERT_FILE", root_file)  # truststore's Linux trust store
    chain = make_chain()
    srv = server(chain.leaf)
    ctx = truststore.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    with pytest.raises(urllib.error.URLError, match="unable to get local issuer"):
        urllib.request.urlopen(srv.url, context=ctx, timeout=30)
    assert aia_ext.enable(ctx) is ctx and aia_ext.is_enabled(ctx)
    assert aia_ext.engine_of(ctx) == ("fallback" if engine == "fallback" else "native")
    assert urllib.request.urlopen(srv.url, context=ctx, timeout=30).read() == b"ok\n"
    assert fetches_of(aia, chain) == 1
    aia_ext.disable(ctx)
    assert not aia_ext.is_enabled(ctx)
    aia_ext.clear_cache()
    with pytest.raises(urllib.error.URLError, match="unable to get local issuer"):
        urllib.request.urlopen(srv.url, context=ctx, timeout=30)


def test_a_pool_of_two_thousand_is_loaded_whole_and_indexed(make_chain, server, root, root_file,
                                                             aia, tmp_path):
    """Issue 14, 5: a pool file was cut at 16 certificates, and searched linearly."""
    from aia_ext._private.testing import new_key

    chain = make_chain(serve=False)
    shared_key = new_key()  # cheap decoys: distinct names, one key
    decoys = [issue(f"Decoy CA {i}", root, ca=True, key=shared_key) for i in range(1999)]
    pool_file = write_pem(tmp_path / "pool.pem", *decoys, chain.intermediates[0])
    ctx = aia_ext.create_default_context(cafile=root_file, intermediates=pool_file)
    from aia_ext._private.engines import enabled_engine

    pool = enabled_engine(ctx).options_of(ctx).intermediates  # type: ignore[union-attr]
    assert len(pool) == 2000
    assert [c.der for c in pool.issuers_of(_parsed(chain.leaf.der))] == \
        [chain.intermediates[0].der]
    assert verify_code(ctx, server(chain.leaf)) == 0
    assert fetches_of(aia, chain) == 0


def _parsed(der: bytes):
    from aia_ext._private.der import parse_certificate

    return parse_certificate(der)


def test_a_pool_over_the_cap_is_a_clear_error(root, tmp_path, monkeypatch):
    from aia_ext._private import options

    monkeypatch.setattr(options, "MAX_INTERMEDIATES", 5)
    inter = issue("Pool CA", root, ca=True)
    pool_file = write_pem(tmp_path / "pool.pem", *([inter] * 6))
    with pytest.raises(ValueError, match=r"intermediates: more than 5 certificates .*pool\.pem"):
        aia_ext.create_default_context(intermediates=pool_file)


def test_the_pool_prefers_the_key_the_child_names(root, root_file, server, aia, tmp_path):
    """Two CAs with one name and two keys (a re-keyed CA): the one whose key identifier
    the leaf names is the one handed to the verifier."""
    from aia_ext._private.options import make_options

    old = issue("Re-keyed CA", root, ca=True)
    new = issue("Re-keyed CA", root, ca=True)
    leaf = issue("localhost", new, dns=["localhost"])
    pool = make_options({"intermediates": [old.der, new.der]}).intermediates
    assert [c.der for c in pool.issuers_of(_parsed(leaf.der))] == [new.der]
    ctx = aia_ext.create_default_context(cafile=root_file, intermediates=[old.der, new.der])
    assert verify_code(ctx, server(leaf)) == 0
