"""report(), diagnose() and `aia-ext check`, on local servers and the real-chain corpus."""

from __future__ import annotations

import datetime
import io
import json
import pathlib
import socket
import ssl
import subprocess
import sys

import pytest

import aia_ext
from aia_ext._private.cli import main as cli
from aia_ext._private.testing import _route_key, issue, write_pem
from aia_ext.diagnosis import diagnose

from .helpers import fetches_of, unique_path

DATA = pathlib.Path(__file__).parent / "data"
CORPUS = json.loads((DATA / "real_chains" / "manifest.json").read_text())["chains"]
SCHEMA = json.loads((pathlib.Path(aia_ext.__file__).parent / "diagnosis.schema.json").read_text())


def check(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = cli(["check", *argv], out)
    return code, out.getvalue()


def ders(pem: str | bytes) -> list[bytes]:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    data = pem.encode() if isinstance(pem, str) else pem
    return [c.public_bytes(Encoding.DER) for c in x509.load_pem_x509_certificates(data)]


# ---------------------------------------------------------------- report()

@pytest.mark.parametrize("learn, second", [(True, "learned"), (False, "memory cache")])
def test_report_after_a_chase(learn, second, make_chain, server, root_file):
    chain = make_chain()
    ctx = aia_ext.create_default_context(cafile=root_file, learn_intermediates=learn)
    srv = server(chain.leaf)
    for expected_source in ("network", second):
        with socket.create_connection(srv.address) as raw, \
                ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            rep = aia_ext.report(tls)
        assert rep is not None and rep.verified
        assert rep.verify_code == 0
        [fetched] = rep.added
        assert fetched.subject == chain.intermediates[0].subject
        url = "" if expected_source == "learned" else chain.urls[0]
        assert fetched.url == url and fetched.source == expected_source
        assert fetched.der == chain.intermediates[0].der
        assert rep.network_fetches == (1 if expected_source == "network" else 0)
        if sys.version_info >= (3, 10):
            assert len(rep.verified_chain) == 3 and rep.verified_chain[1] == fetched.der


def test_no_report_for_a_complete_chain(make_chain, server, root_file):
    chain = make_chain()
    ctx = aia_ext.create_default_context(cafile=root_file)
    with socket.create_connection(server(chain.leaf, chain.intermediates).address) as raw, \
            ctx.wrap_socket(raw, server_hostname="localhost") as tls:
        assert aia_ext.report(tls) is None


def test_report_lists_failed_urls(make_chain, server, root_file, aia):
    chain = make_chain()
    dead = aia.url(unique_path())  # 404
    leaf = issue("localhost", chain.intermediates[0], aia=[dead, chain.urls[0]],
                 dns=["localhost"])
    ctx = aia_ext.create_default_context(cafile=root_file)
    with socket.create_connection(server(leaf).address) as raw, \
            ctx.wrap_socket(raw, server_hostname="localhost") as tls:
        rep = aia_ext.report(tls)
    assert rep is not None and rep.verified
    assert [(f.url, f.reason.split(":")[0]) for f in rep.failed] == [(dead, "HTTP 404")]


def test_report_rejects_other_objects():
    with pytest.raises(TypeError):
        aia_ext.report("nope")  # type: ignore[arg-type]


def test_report_through_urllib3(make_chain, server, root_file):
    urllib3 = pytest.importorskip("urllib3")
    chain = make_chain()
    ctx = aia_ext.create_default_context(cafile=root_file)
    with urllib3.PoolManager(ssl_context=ctx) as pool:
        response = pool.request("GET", server(chain.leaf).url, preload_content=False)
        rep = aia_ext.report(response.connection.sock)
        response.release_conn()
    assert rep is not None and [f.url for f in rep.added] == chain.urls


def test_report_through_requests(make_chain, server, root_file):
    requests = pytest.importorskip("requests")
    from requests.adapters import HTTPAdapter

    ctx = aia_ext.create_default_context(cafile=root_file)

    class Adapter(HTTPAdapter):
        def init_poolmanager(self, *args, **kwargs):
            kwargs["ssl_context"] = ctx
            return super().init_poolmanager(*args, **kwargs)

    chain = make_chain()
    with requests.Session() as session:
        session.mount("https://", Adapter())
        with session.get(server(chain.leaf).url, stream=True) as response:
            rep = aia_ext.report(response.raw.connection.sock)
    assert rep is not None and [f.url for f in rep.added] == chain.urls


def test_report_through_httpx(make_chain, server, root_file):
    httpx = pytest.importorskip("httpx")
    chain = make_chain()
    ctx = aia_ext.create_default_context(cafile=root_file)
    with httpx.Client(verify=ctx) as client, \
            client.stream("GET", server(chain.leaf).url) as response:
        tls = response.extensions["network_stream"].get_extra_info("ssl_object")
        rep = aia_ext.report(tls)
    assert rep is not None and [f.url for f in rep.added] == chain.urls


# ---------------------------------------------------------------- check / diagnose

def test_check_complete_server_exits_0(make_chain, server, root_file, aia):
    chain = make_chain()
    srv = server(chain.leaf, chain.intermediates)
    code, out = check(f"https://localhost:{srv.port}/", "--cafile", root_file)
    assert code == 0, out
    assert "[served] CN=localhost" in out and "[trusted] CN=aia_ext test root" in out
    assert fetches_of(aia, chain) == 0


def test_check_leaf_only_server_exits_3_and_writes_the_fix(make_chain, server, root_file,
                                                            tmp_path):
    chain = make_chain(levels=2)
    srv = server(chain.leaf)
    out_pem = tmp_path / "fixed.pem"
    code, out = check(f"localhost:{srv.port}", "--cafile", root_file, "--pem", str(out_pem))
    assert code == 3, out
    assert out.count("[fetched]") == 2 and chain.urls[0] in out
    assert "VERIFIES ONLY WITH AIA" in out and str(out_pem) in out
    assert ders(out_pem.read_bytes()) == [chain.leaf.der] + [c.der for c in chain.intermediates]
    # The fix works: a server sending that chain verifies with plain ssl.
    plain = ssl.create_default_context(cafile=root_file)
    fixed = server(chain.leaf, chain.intermediates)
    with socket.create_connection(fixed.address) as raw:
        plain.wrap_socket(raw, server_hostname="localhost").close()


def test_check_untrusted_root_exits_1(server, root, tmp_path):
    other = write_pem(tmp_path / "other.pem", issue("unrelated root", ca=True))
    # The whole chain is served and names no caIssuers URL: nothing to fetch,
    # so nothing could change the answer.
    inter = issue("Intermediate", root, ca=True)
    srv = server(issue("localhost", inter, dns=["localhost"]), [inter])
    code, out = check(f"https://localhost:{srv.port}/", "--cafile", other)
    assert code == 1, out
    assert "DOES NOT VERIFY" in out and "verify error 20" in out


def test_check_hostname_mismatch_exits_1(make_chain, server, root_file):
    chain = make_chain()
    srv = server(chain.leaf, chain.intermediates)
    code, out = check(f"localhost:{srv.port}", "--cafile", root_file,
                      "--hostname", "elsewhere.example")
    assert code == 1 and "verify error 62" in out


def test_check_json_validates_against_the_schema(make_chain, server, root_file):
    jsonschema = pytest.importorskip("jsonschema")
    chain = make_chain()
    srv = server(chain.leaf)
    code, out = check(f"https://localhost:{srv.port}/", "--cafile", root_file, "--json")
    doc = json.loads(out)
    jsonschema.validate(doc, SCHEMA)
    assert code == doc["exit_code"] == 3 and doc["verdict"] == "incomplete"
    assert [c["origin"] for c in doc["verified_chain"]] == ["served", "fetched", "trusted"]
    assert doc["fetched"][0]["url"] == chain.urls[0]
    assert doc["missing"] == ["issuer of CN=localhost"]
    # No trust in the root, whose caIssuers URL answers 404: the answer could change.
    code, out = check(f"https://localhost:{srv.port}/", "--json")
    doc = json.loads(out)
    jsonschema.validate(doc, SCHEMA)
    assert doc["verdict"] == "inconclusive" and doc["fixed_chain_pem"] is None
    assert code == doc["exit_code"] == 4
    assert [f["code"] for f in doc["findings"]] == ["aia-unreachable", "verify-error"]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("argv,message", [
    (["/nonexistent/leaf.pem"], "no such file, and not an https:// URL or host[:port]"),
    (["{tmp}"], "cannot read"),
    (["{text}"], "holds no readable certificate"),
    (["{leaf}", "--at", "yesterday"], "--at: 'yesterday' is not an ISO 8601"),
    (["https://localhost:99999/"], "bad port"),
    (["{leaf}", "--timeout", "-1"], "timeout must be"),
])
def test_check_usage_errors_exit_2_in_one_line(argv, message, tmp_path, root):
    text = tmp_path / "notes.txt"
    text.write_text("hello, not a certificate\n")
    leaf = write_pem(tmp_path / "leaf.pem", issue("x", root))
    values = {"tmp": str(tmp_path), "text": str(text), "leaf": leaf, "closed": _closed_port()}
    result = subprocess.run(
        [sys.executable, "-m", "aia_ext", "check", *[a.format(**values) for a in argv]],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("aia-ext: error: ") and message in lines[0]


def test_check_a_closed_port_is_unreachable_exit_5():
    result = subprocess.run(
        [sys.executable, "-m", "aia_ext", "check", f"127.0.0.1:{_closed_port()}"],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 5, result
    assert result.stdout == ""
    assert result.stderr.startswith("aia-ext: unreachable: cannot reach 127.0.0.1:")


def test_diagnose_api_on_bytes_with_at(make_chain, root_file, root):
    import datetime

    chain = make_chain()
    result = diagnose(chain.leaf.pem, cafile=root_file, hostname="localhost")
    assert result.verified and result.chain_was_incomplete
    assert [c.subject for c in result.verified_chain] == [
        "CN=localhost", chain.intermediates[0].subject, root.subject]
    assert result.fixed_chain_pem is not None
    past = datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc)
    old = diagnose(chain.leaf.der, cafile=root_file, at=past)
    assert not old.verified and old.verify_code == 9  # not yet valid
    with pytest.raises(ValueError, match="aware"):
        diagnose(chain.leaf.der, cafile=root_file, at=datetime.datetime(2020, 1, 1))


def test_diagnose_fetched_certificates_are_not_anchors(aia, root_file):
    # A self-signed certificate served at the AIA URL, with PARTIAL_CHAIN-like
    # trust impossible: diagnose reports failure exactly as a handshake would.
    fake = issue("aia_ext test root", ca=True)
    url = aia.serve(unique_path(), fake.der)
    leaf = issue("localhost", fake, aia=[url], dns=["localhost"])
    result = diagnose(leaf.pem, cafile=root_file)
    assert not result.verified and result.verify_code == 19


# ---------------------------------------------------------------- the real-chain corpus

@pytest.fixture
def proxy(aia, monkeypatch):
    """The AIA server as a forward proxy: real caIssuers URLs, served on loopback."""
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{aia.port}")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    return aia


@pytest.mark.parametrize("form", ["der", "p7c"])
@pytest.mark.parametrize("entry", CORPUS, ids=[c["dir"] for c in CORPUS])
def test_real_chain_corpus(entry, form, proxy, tmp_path):
    base = DATA / "real_chains"
    urls = []
    for inter in entry["intermediates"]:
        key = "served_file_der" if form == "der" else "served_file_p7c_constructed"
        url = inter["aia_ca_issuers"][0]
        proxy.serve(url, (base / inter[key]).read_bytes())
        urls.append(url)
    before = {u: proxy.hits[_route_key(u)] for u in urls}
    complete = [ders((base / entry["leaf"]).read_bytes())[0]] + [
        (base / i["served_file_der"]).read_bytes() for i in entry["intermediates"]]
    at = datetime.datetime.fromisoformat(entry["validation_time"])
    # The same verification of the complete chain, without AIA: what the
    # server would get if it sent its intermediates.
    baseline = diagnose(b"".join(ssl.DER_cert_to_PEM_cert(d).encode() for d in complete),
                                cafile=str(base / entry["root"]), hostname=entry["host"], at=at,
                                max_fetches=0, learn_intermediates=False)
    assert not baseline.chain_was_incomplete
    out_pem = tmp_path / "out.pem"
    code, out = check(str(base / entry["leaf"]), "--cafile", str(base / entry["root"]),
                      "--at", entry["validation_time"], "--hostname", entry["host"],
                      "--pem", str(out_pem))
    assert [proxy.hits[_route_key(u)] - before[u] for u in urls] == [1] * len(urls)
    if baseline.verified:
        assert code == 3, out
        assert ders(out_pem.read_bytes()) == complete
    else:
        # e.g. Python 3.13's VERIFY_X509_STRICT rejects a 2014 CA without keyUsage
        # (error 92) whether the chain is served or fetched: same verdict.
        assert code == 1, out
        assert f"verify error {baseline.verify_code} " in out


def test_check_reports_the_completed_chains_error_depth(make_chain, server, root_file):
    """Issue 25: an untrusted root behind a fetched intermediate is OpenSSL's error 20
    at depth 1 (the intermediate), as on the completed chain; it said depth 0 (the leaf)."""
    chain = make_chain(issuer_root=issue("a root nobody trusts", ca=True))
    srv = server(chain.leaf)
    code, out = check(f"localhost:{srv.port}", "--cafile", root_file)
    assert code == 4, out  # inconclusive: the intermediate's own caIssuers URL is a 404
    assert "verify error 20 at depth 1 (CN=Intermediate 0)" in out
    code, out = check(f"localhost:{srv.port}", "--cafile", root_file, "--json")
    assert json.loads(out)["verify_depth"] == 1
    ctx = aia_ext.create_default_context(cafile=root_file)
    diagnosis = aia_ext.diagnosis.diagnose(f"localhost:{srv.port}", context=ctx)
    assert (diagnosis.verify_code, diagnosis.verify_depth) == (20, 1)
    assert diagnosis.failed_path[1].subject == "CN=Intermediate 0"
