"""aia_ext.requests.AIAAdapter keeps requests' semantics: per-request ``cert=`` and
``verify=`` stay with that request, and ``verify=False`` works.

Servers are real HTTPS servers on 127.0.0.1 that send only their leaf (so every
handshake needs AIA), ask for a client certificate optionally, and record
whether one was presented.
"""

from __future__ import annotations

import pathlib
import ssl
from collections.abc import Iterator
from typing import Callable

import pytest
from cryptography.x509.oid import ExtendedKeyUsageOID

import aia_ext
from aia_ext._private.testing import AIAServer, Cert, issue, write_pem

from .helpers import unique_path

requests = pytest.importorskip("requests")
urllib3 = pytest.importorskip("urllib3")
from aia_ext.requests import AIAAdapter  # noqa: E402 - after the importorskip


@pytest.fixture(autouse=True)
def _no_environment_bundles(monkeypatch: pytest.MonkeyPatch) -> None:
    # requests turns verify=True into these when they are set (a user's choice).
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)


@pytest.fixture(scope="module")
def client_pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, str]:
    """(client CA file, client certificate file, its key file)."""
    directory = tmp_path_factory.mktemp("client")
    ca = issue("client CA", ca=True)
    client = issue("a client", ca, dns=["client.example"],
                   extended_key_usage=[ExtendedKeyUsageOID.CLIENT_AUTH])
    key = directory / "client.key"
    key.write_bytes(client.key_pem)
    return (write_pem(directory / "ca.pem", ca), write_pem(directory / "client.pem", client),
            str(key))


@pytest.fixture
def https_server(aia: AIAServer, client_pki: tuple[str, str, str],
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[Cert], AIAServer]]:
    """HTTPS servers sending only their leaf, with optional client certificates."""
    started: list[AIAServer] = []

    def start(root: Cert) -> AIAServer:
        inter = issue("Adapter Intermediate", root, ca=True)
        url = aia.serve(unique_path(), inter.der)
        leaf = issue("localhost", inter, aia=[url], dns=["localhost"], ips=["127.0.0.1"])
        directory = tmp_path_factory.mktemp("server")
        key = directory / "key.pem"
        key.write_bytes(leaf.key_pem)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(write_pem(directory / "leaf.pem", leaf), str(key))
        context.verify_mode = ssl.CERT_OPTIONAL
        context.load_verify_locations(client_pki[0])
        srv = AIAServer(context).__enter__()
        srv.serve("/", b"ok\n")
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.close()


def _url(srv: AIAServer) -> str:
    return f"https://localhost:{srv.port}/"


def test_a_client_certificate_goes_only_where_it_was_asked_for(https_server, root, root_file,
                                                               client_pki):
    """A client certificate given for host A was also presented to host B."""
    host_a, host_b = https_server(root), https_server(root)
    base = aia_ext.create_default_context(cafile=root_file)
    with requests.Session() as session:
        session.mount("https://", AIAAdapter(base))
        assert session.get(_url(host_a), cert=client_pki[1:], timeout=30).text == "ok\n"
        assert session.get(_url(host_b), timeout=30).text == "ok\n"
        assert session.get(_url(host_a), timeout=30).text == "ok\n"
    assert host_a.client_certificates == [True, False]
    assert host_b.client_certificates == [False]


def test_a_ca_given_for_one_request_is_not_trusted_by_the_next(https_server, root_file,
                                                               tmp_path):
    """A CA passed with verify=path stayed trusted for later verify=True requests."""
    other_root = issue("another root", ca=True)
    other_file = write_pem(tmp_path / "other-root.pem", other_root)
    host_c, host_d = https_server(other_root), https_server(other_root)
    base = aia_ext.create_default_context(cafile=root_file)
    with requests.Session() as session:
        session.mount("https://", AIAAdapter(base))
        assert session.get(_url(host_c), verify=other_file, timeout=30).text == "ok\n"
        with pytest.raises(requests.exceptions.SSLError, match="CERTIFICATE_VERIFY_FAILED"):
            session.get(_url(host_d), timeout=30)
        # The base context trusts only what it did.
        with pytest.raises(requests.exceptions.SSLError):
            session.get(_url(host_c), timeout=30)
    assert len(base.get_ca_certs()) == 1


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_verify_false_works_as_with_the_plain_adapter(https_server, aia, root_file):
    stranger = issue("untrusted root", ca=True)
    srv = https_server(stranger)
    base = aia_ext.create_default_context(cafile=root_file)
    before = aia.total_hits
    with requests.Session() as session:
        session.mount("https://", AIAAdapter(base))
        assert session.get(_url(srv), verify=False, timeout=30).text == "ok\n"
        with pytest.raises(requests.exceptions.SSLError):
            session.get(_url(srv), timeout=30)
    # Nobody verified the first request, so nothing was fetched for it.
    assert aia.total_hits - before == 1
    assert base.verify_mode == ssl.CERT_REQUIRED and base.check_hostname


def test_derived_contexts_keep_the_base_options_and_are_bounded(root_file, client_pki,
                                                                tmp_path):
    from aia_ext._private.engines import enabled_engine
    from aia_ext.requests import MAX_DERIVED_CONTEXTS

    base = aia_ext.create_default_context(cafile=root_file, max_fetches=3)
    adapter = AIAAdapter(base)
    derived = adapter.context_for(True, client_pki[1:])
    assert derived is not base and aia_ext.is_enabled(derived)
    assert enabled_engine(derived).options_of(derived).max_fetches == 3  # type: ignore[union-attr]
    assert derived.verify_flags == base.verify_flags
    assert adapter.context_for(True, client_pki[1:]) is derived
    assert adapter.context_for(True, None) is base
    assert not aia_ext.is_enabled(adapter.context_for(False, None))
    for index in range(MAX_DERIVED_CONTEXTS + 5):
        bundle = tmp_path / f"bundle-{index}.pem"
        bundle.write_bytes(pathlib.Path(root_file).read_bytes())
        adapter.context_for(str(bundle), None)
    assert len(adapter._derived) == MAX_DERIVED_CONTEXTS


@pytest.mark.parametrize("variable", ["REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"])
def test_an_environment_bundle_adds_to_the_adapters_context(variable, https_server, root,
                                                            root_file, tmp_path, monkeypatch):
    """Issue 25: the variable used to replace the adapter's context (20 on every request)."""
    other_root = issue("the environment's root", ca=True)
    bundle = write_pem(tmp_path / "env-bundle.pem", other_root)
    monkeypatch.setenv(variable, bundle)
    session = requests.Session()
    session.mount("https://", AIAAdapter(aia_ext.create_default_context(cafile=root_file)))
    # The adapter's own trust store still verifies (and AIA still completes)...
    assert session.get(_url(https_server(root)), timeout=30).text == "ok\n"
    # ...and the environment's bundle adds to it, as requests does with a custom context.
    assert session.get(_url(https_server(other_root)), timeout=30).text == "ok\n"
    # An explicit verify= path other than the environment's still replaces the store.
    only = write_pem(tmp_path / "only.pem", other_root)
    with pytest.raises(requests.exceptions.SSLError):
        session.get(_url(https_server(root)), timeout=30, verify=only)
    # verify=False still does not verify, and urllib3 says so.
    with pytest.warns(urllib3.exceptions.InsecureRequestWarning):
        assert session.get(_url(https_server(root)), timeout=30, verify=False).text == "ok\n"


def test_without_trust_env_the_variables_are_not_read(https_server, root, root_file, tmp_path,
                                                      monkeypatch):
    other_root = issue("the environment's root", ca=True)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", write_pem(tmp_path / "env.pem", other_root))
    session = requests.Session()
    session.trust_env = False
    session.mount("https://", AIAAdapter(aia_ext.create_default_context(cafile=root_file)))
    assert session.get(_url(https_server(root)), timeout=30).text == "ok\n"
    with pytest.raises(requests.exceptions.SSLError):
        session.get(_url(https_server(other_root)), timeout=30)
