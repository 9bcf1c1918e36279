"""Shared fixtures: one AIA HTTP server and one trusted root per test session.

Every chain a test builds gets caIssuers paths of its own, so tests never
share cache entries; the cache is also cleared around each test.
"""

from __future__ import annotations

import itertools
import os
import socket
import ssl
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import urlsplit

import pytest
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7

import aia_ext
from aia_ext._private.cache import cache
from aia_ext._private.lab import AIAServer, Cert, TLSServer, issue, write_pem

_paths = itertools.count(1)


@pytest.fixture(scope="session")
def aia() -> Iterator[AIAServer]:
    with AIAServer() as server:
        yield server


@pytest.fixture(scope="session")
def root() -> Cert:
    return issue("aia_ext test root", ca=True)


@pytest.fixture(scope="session")
def root_file(root: Cert, tmp_path_factory: pytest.TempPathFactory) -> str:
    return write_pem(tmp_path_factory.mktemp("trust") / "root.pem", root)


FALLBACK = os.environ.get("AIA_EXT_ENGINE", "").strip().lower() == "fallback"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "native_only: needs the native engine (skipped with AIA_EXT_ENGINE=fallback)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not FALLBACK:
        return
    skip = pytest.mark.skip(reason="tests the native engine itself; AIA_EXT_ENGINE=fallback")
    for item in items:
        if "native_only" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    aia_ext.clear_cache()
    yield
    aia_ext.clear_cache()


def unique_path(suffix: str = ".der") -> str:
    return f"/ca/{next(_paths)}{suffix}"


def encode(certs: Sequence[Cert], fmt: str) -> bytes:
    """The body of an AIA response in one of the accepted formats."""
    if fmt == "der":
        assert len(certs) == 1
        return certs[0].der
    if fmt == "pem":
        return b"".join(c.pem for c in certs)
    encoding = Encoding.DER if fmt == "p7der" else Encoding.PEM
    return pkcs7.serialize_certificates([c.cert for c in certs], encoding)


@dataclass
class Chain:
    """leaf -> intermediates[0] -> ... -> intermediates[-1] -> root."""

    leaf: Cert
    intermediates: list[Cert]
    urls: list[str] = field(default_factory=list)  # urls[i]: where the issuer of level i is

    @property
    def paths(self) -> list[str]:
        return [urlsplit(u).path for u in self.urls]


@pytest.fixture
def make_chain(aia: AIAServer, root: Cert) -> Callable[..., Chain]:
    """Build root -> N intermediates -> leaf with every issuer served by AIA."""

    def build(levels: int = 1, fmt: str = "der", *, hostname: str = "localhost",
              issuer_root: Cert | None = None, serve: bool = True,
              **leaf_kwargs: Any) -> Chain:
        # urls[i] serves intermediates[i], the issuer of the leaf (i == 0) or of
        # intermediates[i - 1]; the top intermediate points at an unserved root URL.
        urls = [aia.url(unique_path("." + fmt)) for _ in range(levels)]
        parent = issuer_root or root
        intermediates: list[Cert] = []
        for level in reversed(range(levels)):
            up = urls[level + 1] if level + 1 < levels else aia.url(unique_path())
            parent = issue(f"Intermediate {level}", parent, ca=True, aia=[up])
            intermediates.insert(0, parent)
        leaf = issue(hostname, parent, aia=urls[:1], dns=[hostname], ips=["127.0.0.1"],
                     **leaf_kwargs)
        chain = Chain(leaf, intermediates, urls)
        if serve:
            for path, cert in zip(chain.paths, intermediates):
                aia.serve(path, encode([cert], fmt))
        return chain

    return build


@pytest.fixture
def server() -> Iterator[Callable[..., TLSServer]]:
    """Start TLS servers for a test; all are stopped at its end."""
    started: list[TLSServer] = []

    def start(leaf: Cert, chain: Sequence[Cert] = ()) -> TLSServer:
        srv = TLSServer(leaf, chain).__enter__()
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.close()


@pytest.fixture
def healthy(make_chain: Callable[..., Chain], server: Callable[..., TLSServer],
            root_file: str) -> Callable[[], None]:
    """A check that the process still completes chains normally."""

    def check() -> None:
        chain = make_chain()
        ctx = aia_ext.create_default_context(cafile=root_file)
        assert verify_code(ctx, server(chain.leaf)) == 0

    return check


def drip(interval: float, count: int) -> Callable[[Any], None]:
    """An AIA handler sending a ``count``-byte body one byte per ``interval`` seconds."""

    def handler(request: Any) -> None:
        request.send_response(200)
        request.send_header("Content-Length", str(count))
        request.end_headers()
        try:
            for _ in range(count):
                request.wfile.write(b"\x30")
                request.wfile.flush()
                time.sleep(interval)
        except OSError:
            pass  # the client gave up, as it should

    return handler


def handshake(context: ssl.SSLContext, srv: TLSServer,
              hostname: str = "localhost") -> ssl.SSLSocket:
    """One real TLS handshake to ``srv``; returns the (closed) socket."""
    with socket.create_connection(srv.address, timeout=30) as raw:
        tls = context.wrap_socket(raw, server_hostname=hostname)
        tls.close()
        return tls


def verify_code(context: ssl.SSLContext, srv: TLSServer, hostname: str = "localhost") -> int:
    """0 for a verified handshake, else the SSLCertVerificationError code."""
    try:
        handshake(context, srv, hostname)
    except ssl.SSLCertVerificationError as exc:
        return int(exc.verify_code)
    return 0


def chain_lengths(context: ssl.SSLContext, srv: TLSServer) -> tuple[int, int]:
    """(certificates the server sent, certificates in the verified chain)."""
    with socket.create_connection(srv.address, timeout=30) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            obj = tls._sslobj  # type: ignore[attr-defined]
            return len(obj.get_unverified_chain()), len(obj.get_verified_chain())


def fetches_of(aia: AIAServer, chain: Chain) -> int:
    return sum(aia.hits[p] for p in chain.paths)


__all__ = [
    "Chain",
    "cache",
    "chain_lengths",
    "drip",
    "encode",
    "fetches_of",
    "handshake",
    "socket",
    "unique_path",
    "verify_code",
]
