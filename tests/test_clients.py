"""Real requests through popular clients against a server that sends only its leaf."""

from __future__ import annotations

import asyncio
import http.client
import ssl
import urllib.request

import pytest

import aia_ext

from .helpers import closed, fetches_of


@pytest.fixture
def leaf_only(make_chain, server):
    chain = make_chain()
    return chain, server(chain.leaf)


@pytest.fixture
def ctx(root_file: str) -> ssl.SSLContext:
    return aia_ext.create_default_context(cafile=root_file)


def test_urllib_request(leaf_only, ctx, aia):
    chain, srv = leaf_only
    with urllib.request.urlopen(srv.url, context=ctx, timeout=30) as response:
        assert response.read() == b"ok\n"
    assert fetches_of(aia, chain) == 1


def test_urllib_request_fails_without_aia(leaf_only, root_file):
    _chain, srv = leaf_only
    plain = ssl.create_default_context(cafile=root_file)
    with pytest.raises(urllib.request.URLError) as info:
        urllib.request.urlopen(srv.url, context=plain, timeout=30)
    assert isinstance(info.value.reason, ssl.SSLCertVerificationError)
    assert info.value.reason.verify_code == 20


def test_http_client(leaf_only, ctx, aia):
    chain, srv = leaf_only
    conn = http.client.HTTPSConnection("localhost", srv.port, context=ctx, timeout=30)
    try:
        conn.request("GET", "/")
        assert conn.getresponse().read() == b"ok\n"
    finally:
        conn.close()
    assert fetches_of(aia, chain) == 1


def test_urllib3(leaf_only, ctx, aia):
    urllib3 = pytest.importorskip("urllib3")
    chain, srv = leaf_only
    with urllib3.PoolManager(ssl_context=ctx) as pool:
        assert pool.request("GET", srv.url).data == b"ok\n"
    assert fetches_of(aia, chain) == 1


def test_requests_adapter(leaf_only, ctx, aia):
    requests = pytest.importorskip("requests")
    from requests.adapters import HTTPAdapter

    class ContextAdapter(HTTPAdapter):
        """Passes an SSLContext to urllib3: no CA bundle file involved."""

        def init_poolmanager(self, *args, **kwargs):
            kwargs["ssl_context"] = ctx
            return super().init_poolmanager(*args, **kwargs)

    chain, srv = leaf_only
    with requests.Session() as session:
        session.mount("https://", ContextAdapter())
        assert session.get(srv.url, timeout=30).text == "ok\n"
    assert fetches_of(aia, chain) == 1


def test_httpx(leaf_only, ctx, aia):
    httpx = pytest.importorskip("httpx")
    chain, srv = leaf_only
    with httpx.Client(verify=ctx) as client:
        assert client.get(srv.url).text == "ok\n"
    assert fetches_of(aia, chain) == 1


def test_asyncio_streams(leaf_only, ctx, aia):
    chain, srv = leaf_only

    async def fetch() -> bytes:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", srv.port, ssl=ctx, server_hostname="localhost"
        )
        try:
            writer.write(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            await writer.drain()
            return await reader.read()
        finally:
            await closed(writer)

    assert asyncio.run(fetch()).endswith(b"\r\n\r\nok\n")
    assert fetches_of(aia, chain) == 1
