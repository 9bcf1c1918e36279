"""No credentials on AIA fetches; enabled contexts survive fork()."""

from __future__ import annotations

import os
import ssl
import threading
import warnings

import pytest

from aia_ext._private.chase.cache import cache
from aia_ext._private.testing import AIAServer, issue, write_pem

from ..helpers import unique_path, verify_code
from .hostile import tight_context

BASE_HEADERS = {"host", "accept", "accept-encoding", "user-agent", "connection"}


def test_no_credentials_even_with_a_client_certificate(aia, root, root_file, server,
                                                       make_chain, tmp_path):
    client = issue("client", root, extended_key_usage=[])
    cert_file = write_pem(tmp_path / "client.pem", client)
    key_file = tmp_path / "client.key"
    key_file.write_bytes(client.key_pem)
    chain = make_chain()
    ctx = tight_context(root_file)
    ctx.load_cert_chain(cert_file, str(key_file))  # str: PyPy's ssl takes no Path
    assert verify_code(ctx, server(chain.leaf)) == 0
    requests = [r for r in aia.requests if r[1] == chain.paths[0]]
    assert len(requests) == 1
    assert {name.lower() for name in requests[0][2]} == BASE_HEADERS


def test_https_fetch_sends_no_client_certificate(root, root_file, server, tmp_path, monkeypatch):
    aia_cert = issue("127.0.0.1", root, ips=["127.0.0.1"])
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    chain_file = write_pem(tmp_path / "aia.pem", aia_cert)
    (tmp_path / "aia.key").write_bytes(aia_cert.key_pem)
    tls.load_cert_chain(chain_file, str(tmp_path / "aia.key"))
    tls.verify_mode = ssl.CERT_OPTIONAL  # ask for a client certificate
    tls.load_verify_locations(root_file)
    # The https fetch verifies its server with the default trust paths.
    monkeypatch.setenv("SSL_CERT_FILE", root_file)
    client = issue("client", root, extended_key_usage=[])
    with AIAServer(tls) as https_aia:
        inter = issue("Intermediate", root, ca=True)
        url = https_aia.serve(unique_path(), inter.der)
        srv = server(issue("localhost", inter, aia=[url], dns=["localhost"]))
        ctx = tight_context(root_file, allow_https=True)
        key = tmp_path / "c.key"
        key.write_bytes(client.key_pem)
        ctx.load_cert_chain(write_pem(tmp_path / "c.pem", client), str(key))
        assert verify_code(tight_context(root_file), srv) == 20  # https is opt-in
        assert https_aia.total_hits == 0
        assert verify_code(ctx, srv) == 0
        assert https_aia.client_certificates == [False]
        assert {n.lower() for n in https_aia.requests[0][2]} == BASE_HEADERS


def test_proxy_credentials_are_not_sent(aia, root, root_file, server, monkeypatch):
    inter = issue("Intermediate", root, ca=True)
    target = "http://ca.invalid/proxied-intermediate.der"
    aia.serve(target, inter.der)
    monkeypatch.setenv("http_proxy", f"http://user:secret@127.0.0.1:{aia.port}")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    srv = server(issue("localhost", inter, aia=[target], dns=["localhost"]))
    assert verify_code(tight_context(root_file), srv) == 0
    request = [r for r in aia.requests if r[1] == target][-1]
    assert {n.lower() for n in request[2]} == BASE_HEADERS


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_enabled_contexts_work_after_fork_even_with_the_cache_lock_held(
        make_chain, server, root_file, aia):
    warm, cold = make_chain(), make_chain()
    warm_srv, cold_srv = server(warm.leaf), server(cold.leaf)
    ctx = tight_context(root_file)
    assert verify_code(ctx, warm_srv) == 0
    held, release = threading.Event(), threading.Event()

    def hold_lock() -> None:
        with cache._lock:
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold_lock)
    holder.start()
    held.wait(5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads, on purpose
        pid = os.fork()
    if pid == 0:  # child: the holder thread does not exist here
        code = 1
        try:
            ok = verify_code(ctx, warm_srv) == 0 and verify_code(ctx, cold_srv) == 0
            code = 0 if ok else 1
        finally:
            os._exit(code)
    release.set()
    holder.join()
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert aia.hits[warm.paths[0]] == 1  # the child used the inherited cache
    assert aia.hits[cold.paths[0]] == 1  # and fetched what it lacked
