"""``aia-ext check`` for scanners: verdicts, findings, many targets, connection options.

Every target is a real server on 127.0.0.1: TLS servers sending chosen chains,
a closed port, a port that accepts and never speaks TLS, STARTTLS servers.
Output is asserted as the JSON Lines objects, validated against the shipped schema.
"""

from __future__ import annotations

import datetime
import io
import json
import pathlib
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

import aia_ext
from aia_ext._private.cli import main as cli
from aia_ext._private.testing import Cert, issue, write_pem

from .helpers import unique_path

SCHEMA = json.loads((pathlib.Path(aia_ext.__file__).parent / "diagnosis.schema.json").read_text())
NOW = datetime.datetime.now(datetime.timezone.utc)
DAY = datetime.timedelta(days=1)


def run(*argv: str) -> tuple[int, list[dict]]:
    out = io.StringIO()
    code = cli(["check", *argv, "--jsonl"], out)
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    jsonschema = pytest.importorskip("jsonschema")
    for record in records:
        jsonschema.validate(record, SCHEMA)
    return code, records


def codes(record: dict) -> list[str]:
    return [f["code"] for f in record["findings"]]


@pytest.fixture
def pki(root, aia):
    inter = issue("Fleet Intermediate", root, ca=True)
    url = aia.serve(unique_path(), inter.der)
    leaf = issue("localhost", inter, aia=[url], dns=["localhost"], ips=["127.0.0.1"])
    return inter, leaf


def target(srv) -> str:
    return f"localhost:{srv.port}"


def test_ok_complete_chain(pki, server, root_file):
    inter, leaf = pki
    code, [record] = run(target(server(leaf, [inter])), "--cafile", root_file)
    assert (code, record["verdict"], record["exit_code"], codes(record)) == (0, "ok", 0, [])


def test_incomplete_is_3_with_missing_intermediate(pki, server, root_file):
    inter, leaf = pki
    code, [record] = run(target(server(leaf)), "--cafile", root_file)
    assert (code, record["verdict"]) == (3, "incomplete")
    assert codes(record) == ["missing-intermediate"]
    assert record["findings"][0]["url"] == record["fetched"][0]["url"]
    assert record["findings"][0]["certificates"][0]["subject"] == inter.subject


@pytest.mark.parametrize("case,expected", [
    ("root-sent", ["root-sent"]),
    ("wrong-order", ["wrong-order"]),
    ("unrelated", ["unrelated-certificate"]),
    ("duplicate", ["duplicate-certificate"]),
    ("expired-extra", ["unrelated-certificate", "expired-certificate-served"]),
])
def test_hygiene_findings_on_a_chain_that_verifies(case, expected, server, root, root_file):
    top = issue("Fleet Top CA", root, ca=True)
    inter = issue("Fleet Issuing CA", top, ca=True)
    leaf = issue("localhost", inter, dns=["localhost"])
    stranger = issue("Somebody Else CA", issue("Somebody Root", ca=True), ca=True)
    expired = issue("Expired CA", root, ca=True, not_before=NOW - 9 * DAY,
                    not_after=NOW - DAY)
    chains = {
        "root-sent": [inter, top, root],
        "wrong-order": [top, inter],
        "unrelated": [inter, stranger, top],
        "duplicate": [inter, inter, top],
        "expired-extra": [inter, top, expired],
    }
    code, [record] = run(target(server(leaf, chains[case])), "--cafile", root_file)
    assert (code, record["verdict"]) == (0, "ok"), record
    assert codes(record) == expected


def test_a_dead_aia_url_is_inconclusive(server, root, root_file):
    inter = issue("Fleet Intermediate", root, ca=True)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{closed.getsockname()[1]}/ca.der"
    leaf = issue("localhost", inter, aia=[dead], dns=["localhost"])
    code, [record] = run(target(server(leaf)), "--cafile", root_file)
    assert (code, record["verdict"]) == (4, "inconclusive")
    assert codes(record) == ["aia-unreachable", "verify-error"]
    assert record["findings"][0]["url"] == dead
    assert record["findings"][0]["reason"].startswith("connection error")


def test_a_hostname_mismatch_names_what_the_certificate_holds(pki, server, root_file):
    inter, leaf = pki
    code, [record] = run(target(server(leaf, [inter])), "--cafile", root_file,
                         "--hostname", "elsewhere.example")
    assert (code, record["verdict"]) == (1, "invalid")
    mismatch = next(f for f in record["findings"] if f["code"] == "hostname-mismatch")
    assert mismatch["names"] == ["localhost", "127.0.0.1"]


def _silent_port() -> Iterator[int]:
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted.append(conn)  # never says a word

    threading.Thread(target=accept, daemon=True).start()
    yield int(listener.getsockname()[1])
    listener.close()
    for conn in accepted:
        conn.close()


@pytest.fixture
def silent_port() -> Iterator[int]:
    yield from _silent_port()


def test_unreachable_targets_are_5_and_objects(silent_port, root_file):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        closed_port = closed.getsockname()[1]
    started = time.monotonic()
    code, records = run(f"127.0.0.1:{closed_port}", f"127.0.0.1:{silent_port}",
                        "--connect-timeout", "0.5", "--cafile", root_file)
    assert time.monotonic() - started < 5
    assert code == 5
    assert sorted(r["verdict"] for r in records) == ["unreachable", "unreachable"]
    assert all(r["exit_code"] == 5 and "cannot reach" in r["error"] for r in records)


def test_a_batch_from_a_file_reports_each_and_exits_with_the_worst(pki, server, root, root_file,
                                                                  tmp_path):
    inter, leaf = pki
    ok, leaf_only = server(leaf, [inter]), server(leaf)
    bad = server(issue("localhost", issue("Stranger", ca=True), dns=["localhost"]))
    targets = tmp_path / "targets.txt"
    targets.write_text(f"# fleet\n{target(ok)}\n\n{target(leaf_only)}  # no intermediate\n"
                       f"{target(bad)}\n{tmp_path / 'missing.pem'}\n")
    code, records = run("--targets", str(targets), "-j", "4", "--cafile", root_file)
    by_target = {r["target"]: r["verdict"] for r in records}
    assert by_target == {target(ok): "ok", target(leaf_only): "incomplete",
                         target(bad): "invalid", str(tmp_path / "missing.pem"): "error"}
    assert code == 2  # the worst: a bad input


def test_the_worst_verdict_orders_as_documented():
    from aia_ext._private.findings import EXIT_CODES, worst

    assert worst(["ok", "incomplete", "inconclusive", "unreachable", "invalid"]) == "invalid"
    assert worst(["ok", "incomplete", "inconclusive", "unreachable"]) == "unreachable"
    assert worst(["ok", "incomplete", "inconclusive"]) == "inconclusive"
    assert worst(["ok", "incomplete"]) == "incomplete"
    assert EXIT_CODES["unreachable"] == 5 and EXIT_CODES["inconclusive"] == 4


def test_targets_from_stdin(pki, server, root_file):
    inter, leaf = pki
    srv = server(leaf, [inter])
    result = subprocess.run([sys.executable, "-m", "aia_ext", "check", "--targets", "-",
                             "--jsonl", "--cafile", root_file],
                            input=f"{target(srv)}\n{target(srv)}\n", capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["verdict"] for line in result.stdout.splitlines()] == ["ok", "ok"]


def test_connect_to_reaches_an_address_and_verifies_the_target_name(pki, server, root_file):
    inter, leaf = pki
    srv = server(leaf, [inter])
    code, [record] = run("https://localhost/", "--connect-to", f"127.0.0.1:{srv.port}",
                         "--cafile", root_file)
    assert (code, record["verdict"], record["hostname"]) == (0, "ok", "localhost")


def _starttls_server(protocol: str, leaf: Cert, tmp_path: pathlib.Path):
    key = tmp_path / f"{protocol}.key"
    key.write_bytes(leaf.key_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(write_pem(tmp_path / f"{protocol}.pem", leaf), str(key))
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        greeting = {"smtp": b"220 fleet ESMTP\r\n", "imap": b"* OK ready\r\n",
                    "pop3": b"+OK ready\r\n"}[protocol]
        conn.sendall(greeting)
        channel: socket.socket = conn
        reader = channel.makefile("rb")
        try:
            while True:
                line = reader.readline()
                if not line or not line.split():
                    return
                words = line.split()
                tag = words[0] if protocol == "imap" else b""
                command = (words[1] if protocol == "imap" and len(words) > 1 else words[0]).upper()
                if command in (b"EHLO", b"HELO"):
                    channel.sendall(b"250-fleet\r\n250 STARTTLS\r\n")
                elif command == b"CAPABILITY":
                    channel.sendall(b"* CAPABILITY IMAP4rev1 STARTTLS\r\n" + tag + b" OK done\r\n")
                elif command == b"CAPA":
                    channel.sendall(b"+OK\r\nSTLS\r\n.\r\n")
                elif command in (b"STARTTLS", b"STLS"):
                    channel.sendall({"smtp": b"220 go ahead\r\n", "imap": tag + b" OK begin\r\n",
                                     "pop3": b"+OK begin\r\n"}[protocol])
                    channel = context.wrap_socket(conn, server_side=True)
                    reader = channel.makefile("rb")  # the session goes on, encrypted
                elif command in (b"QUIT", b"LOGOUT"):
                    return
                else:
                    channel.sendall({"smtp": b"250 ok\r\n", "imap": tag + b" OK\r\n",
                                     "pop3": b"+OK\r\n"}[protocol])
        except (OSError, ssl.SSLError):
            pass
        finally:
            channel.close()

    threading.Thread(target=serve, daemon=True).start()
    return listener


@pytest.mark.parametrize("protocol", ["smtp", "imap", "pop3"])
def test_starttls(protocol, pki, root_file, tmp_path):
    _inter, leaf = pki
    listener = _starttls_server(protocol, leaf, tmp_path)
    try:
        port = listener.getsockname()[1]
        code, [record] = run(f"localhost:{port}", "--starttls", protocol, "--cafile", root_file)
    finally:
        listener.close()
    assert (code, record["verdict"]) == (3, "incomplete"), record


def test_a_client_certificate_for_servers_that_require_one(pki, root_file, tmp_path, aia):
    from cryptography.x509.oid import ExtendedKeyUsageOID

    from aia_ext._private.testing import AIAServer

    inter, leaf = pki
    client_ca = issue("Fleet Client CA", ca=True)
    client = issue("fleet client", client_ca, extended_key_usage=[ExtendedKeyUsageOID.CLIENT_AUTH])
    (tmp_path / "client.key").write_bytes(client.key_pem)
    (tmp_path / "leaf.key").write_bytes(leaf.key_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(write_pem(tmp_path / "leaf.pem", leaf, inter),
                            str(tmp_path / "leaf.key"))
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(write_pem(tmp_path / "client-ca.pem", client_ca))
    # TLS 1.2: the server refuses a missing client certificate inside the handshake
    # (with TLS 1.3 the client's handshake ends first, and the chain is recorded anyway).
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    with AIAServer(context) as srv:
        code, [record] = run(f"localhost:{srv.port}", "--cafile", root_file)
        assert record["verdict"] == "unreachable" and code == 5
        code, [record] = run(f"localhost:{srv.port}", "--cafile", root_file,
                             "--cert", write_pem(tmp_path / "client.pem", client),
                             "--key", str(tmp_path / "client.key"))
        assert (code, record["verdict"]) == (0, "ok"), record


@pytest.mark.parametrize("argv,message", [
    (["--cafile", "{tmp}/nope.pem"], "--cafile {tmp}/nope.pem: no such file"),
    (["--cafile", "{tmp}"], "--cafile {tmp}: is a directory"),
    (["--cafile", "{garbage}"], "--cafile {garbage}: no certificate could be loaded"),
    (["--capath", "{tmp}/none"], "--capath {tmp}/none: no such directory"),
    (["--targets", "{tmp}/none.txt"], "--targets {tmp}/none.txt:"),
    (["-j", "0"], "-j/--jobs must be between 1"),
    (["--key", "{garbage}"], "--key needs --cert"),
])
def test_option_errors_name_the_option_and_the_path(argv, message, tmp_path):
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    values = {"tmp": str(tmp_path), "garbage": str(garbage)}
    result = subprocess.run(
        [sys.executable, "-m", "aia_ext", "check", "localhost:1",
         *[a.format(**values) for a in argv]], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result
    assert result.stdout == ""
    assert result.stderr.strip() == f"aia-ext: error: {message.format(**values)}".strip() \
        or message.format(**values) in result.stderr


def test_a_missing_certificate_file_says_both(tmp_path):
    result = subprocess.run([sys.executable, "-m", "aia_ext", "check", "nonexistent.pem"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "nonexistent.pem: no such file, and not a resolvable host" in result.stderr


def test_pem_dash_writes_the_fixed_chain_to_stdout(pki, server, root_file, tmp_path):
    inter, leaf = pki
    result = subprocess.run([sys.executable, "-m", "aia_ext", "check", target(server(leaf)),
                             "--cafile", root_file, "--pem", "-", "--quiet"],
                            capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 3
    assert result.stdout == (leaf.pem + inter.pem).decode()
    assert not (tmp_path / "-").exists()


def test_a_closed_pipe_ends_quietly(pki, server, root_file):
    inter, leaf = pki
    srv = server(leaf, [inter])
    process = subprocess.Popen(
        [sys.executable, "-m", "aia_ext", "check", *([target(srv)] * 40), "--cafile", root_file],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None
    process.stdout.readline()
    process.stdout.close()  # `| head -1`
    _out, err = process.communicate(timeout=60)
    assert err == b"" and process.returncode in (0, 141)


def _without_timings(value: object) -> object:
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items()
                if not (k == "ms" or k.endswith("_ms"))}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


def test_a_batch_gives_each_target_the_verdict_it_gets_alone(root, root_file, server, aia):
    """Issue 32, item 1: the check learned intermediates from one target and used them
    for the next, so a target whose caIssuers URL is dead read "incomplete" after a
    sibling had sent its intermediate and "inconclusive" alone; targets sharing a URL
    never fetched it.  Each target is now checked as a fresh client would check it."""
    import random

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{closed.getsockname()[1]}/ca.der"
    served = issue("Served Elsewhere", root, ca=True)
    shared_inter = issue("Shared Intermediate", root, ca=True)
    shared = aia.serve(unique_path(), shared_inter.der)
    stranger = issue("Stranger Root", ca=True)
    servers = {
        # Sends the intermediate the dead-URL target lacks: a teacher, before issue 32.
        "teacher": server(issue("localhost", served, dns=["localhost"]), [served]),
        "dead-url": server(issue("localhost", served, aia=[dead], dns=["localhost"])),
        "untrusted": server(issue("localhost", stranger, dns=["localhost"])),
        "wrong-name": server(issue("elsewhere.example", served, dns=["elsewhere.example"]),
                             [served]),
        **{f"shared-{i}": server(issue("localhost", shared_inter, aia=[shared],
                                       dns=["localhost"]))
           for i in range(12)},
    }
    names = {target(srv): name for name, srv in servers.items()}
    expected_verdicts = {"teacher": "ok", "dead-url": "inconclusive", "untrusted": "invalid",
                         "wrong-name": "invalid",
                         **{f"shared-{i}": "incomplete" for i in range(12)}}

    def check(order: list[str], jobs: int) -> dict[str, object]:
        before = aia.hits[aia.path_of(shared)]
        code, records = run(*order, "-j", str(jobs), "--cafile", root_file)
        # Every target that needs the shared URL fetches it: nobody learns it for them.
        assert aia.hits[aia.path_of(shared)] - before == 12
        assert code == 1  # the worst: invalid
        return {names[r["target"]]: _without_timings(r) for r in records}

    alone = {}
    for name, srv in servers.items():
        _, [record] = run(target(srv), "--cafile", root_file)
        alone[name] = _without_timings(record)
    assert {name: r["verdict"] for name, r in alone.items()} == expected_verdicts
    in_order = list(names)
    in_order.sort(key=lambda t: names[t] != "teacher")  # the teacher first
    shuffled = in_order[:]
    random.Random(32).shuffle(shuffled)
    for order, jobs in ((in_order, 1), (shuffled, 1), (shuffled, 32),
                        (list(reversed(in_order)), 32)):
        batch = check(order, jobs)
        assert set(batch) == set(alone)
        for name, record in batch.items():
            differing = {k: (v, alone[name].get(k)) for k, v in record.items()
                         if alone[name].get(k) != v}
            assert not differing, (name, jobs, differing)
