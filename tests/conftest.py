"""Fixtures: one AIA HTTP server and one trusted root per test session, and the engine.

Every chain a test builds gets caIssuers paths of its own, so tests never
share cache entries; the cache is also cleared around each test.

Every test runs under each engine it applies to: the autouse ``engine``
fixture is parametrised over "native" and "fallback" (it sets
``AIA_EXT_ENGINE``, which the engine seam reads on every call).  A test marked
``native_only`` runs under the native engine alone, ``fallback_only`` under
the fallback alone; a module marked ``engine_agnostic`` (parsers, policy
tables) runs once.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any, Callable

import pytest

import aia_ext
from aia_ext._private.testing import AIAServer, Cert, TLSServer, issue, write_pem

from .helpers import Chain, encode, unique_path, verify_code

#: The public lab's fixture (``aia_lab``), registered the way its docs say.
pytest_plugins = ["aia_ext.testing"]

ENGINES = ("native", "fallback")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "engine" not in metafunc.fixturenames:
        return
    if metafunc.definition.get_closest_marker("engine_agnostic"):
        engines: tuple[str, ...] = ("auto",)
    elif metafunc.definition.get_closest_marker("native_only"):
        engines = ("native",)
    elif metafunc.definition.get_closest_marker("fallback_only"):
        engines = ("fallback",)
    else:
        engines = ENGINES
    only = os.environ.get("AIA_EXT_TEST_ENGINES")  # e.g. "native" for a quick local run
    if only:
        engines = tuple(e for e in engines if e in only.split(",") or e == "auto")
    metafunc.parametrize("engine", engines, indirect=True)


@pytest.fixture(autouse=True)
def engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The engine this run of the test uses ("auto": whatever the interpreter picks)."""
    name: str = getattr(request, "param", "auto")
    if name == "auto":
        monkeypatch.delenv("AIA_EXT_ENGINE", raising=False)
    else:
        monkeypatch.setenv("AIA_EXT_ENGINE", name)
    if name == "native":
        try:
            aia_ext._private.binding.bind()
        except aia_ext.UnsupportedPlatformError as exc:
            pytest.skip(f"the native engine cannot bind here: {exc}")
    return name


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


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    aia_ext.clear_cache()
    yield
    aia_ext.clear_cache()


@pytest.fixture(scope="session")
def reneg_lab(root: Cert, aia: AIAServer, root_file: str,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Renegotiating servers (tests/renegotiation.py) and their certificates, shared."""
    from .renegotiation import Servers, lab

    pki = lab(root, aia, str(tmp_path_factory.mktemp("reneg")))
    pki["root_file"] = root_file
    servers = Servers(pki)
    yield servers
    servers.close()


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

    def start(leaf: Cert, chain: Any = (), **kwargs: Any) -> TLSServer:
        srv = TLSServer(leaf, chain, **kwargs).__enter__()
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
