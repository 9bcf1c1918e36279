"""Issue 25: a lab to keep and test against: ``aia_ext.testing`` and ``aia-ext demo --serve``."""

from __future__ import annotations

import signal
import ssl
import subprocess
import urllib.request

import pytest

import aia_ext
from aia_ext.testing import Lab

from .helpers import aia_ext_with_ctrl_c


def test_the_fixture_is_a_started_lab_with_a_broken_chain(aia_lab):
    """``aia_lab`` comes from ``pytest_plugins = ["aia_ext.testing"]`` (tests/conftest.py)."""
    plain = ssl.create_default_context(cafile=aia_lab.root_file)
    with pytest.raises(urllib.error.URLError) as info:
        urllib.request.urlopen(aia_lab.url, context=plain, timeout=30)
    assert isinstance(info.value.reason, ssl.SSLCertVerificationError)
    assert info.value.reason.verify_code == 20
    ctx = aia_ext.create_default_context(cafile=aia_lab.root_file)
    with urllib.request.urlopen(aia_lab.url, context=ctx, timeout=30) as response:
        assert response.read() == b"ok\n"
    assert aia_lab.fetches == 1
    assert aia_lab.ca_issuers_url.startswith("http://127.0.0.1:")


def test_a_lab_in_a_directory_keeps_its_files(tmp_path):
    with Lab(tmp_path / "lab") as lab:
        assert lab.root_file == str(tmp_path / "lab" / "root.pem")
        assert (tmp_path / "lab" / "intermediate.pem").read_bytes() == lab.intermediate.pem
    assert (tmp_path / "lab" / "root.pem").exists()  # a given directory is the user's


def test_the_testing_module_is_an_attribute_of_the_package():
    assert aia_ext.testing.Lab is Lab


def test_demo_serve_keeps_a_lab_up_until_interrupted(tmp_path):
    directory = tmp_path / "lab"
    process = subprocess.Popen(
        aia_ext_with_ctrl_c("demo", "--serve", "--dir", str(directory)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = {}
        assert process.stdout is not None
        for line in process.stdout:
            if ":" in line and line.startswith("  ") and not line.startswith("  try"):
                key, _, value = line.strip().partition(":")
                lines[key.strip()] = value.strip()
            if line.startswith("  try:"):
                break
        root_file = lines["root CA (cafile)"]
        url = lines["HTTPS, leaf only"]
        assert root_file == str(directory / "root.pem")
        assert lines["caIssuers URL"].startswith("http://127.0.0.1:")
        ctx = aia_ext.create_default_context(cafile=root_file)
        for _ in range(2):  # it stays up
            with urllib.request.urlopen(url, context=ctx, timeout=30) as response:
                assert response.read() == b"ok\n"
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    assert "lab stopped" in out and "Traceback" not in err
    assert (directory / "root.pem").exists()


# ---- Issue 32, item 9: the lab's failure cases, through public options -------------

FETCHES = {None: 1, "untrusted-root": 1, "dead-ca-issuers": 0, "slow-ca-issuers": 1,
           "wrong-name": 1, "expired-leaf": 1, "two-missing-levels": 2}


def _verify_code(lab: Lab, ctx: ssl.SSLContext) -> int:
    import socket

    with socket.create_connection(("127.0.0.1", lab.port), timeout=30) as raw:
        try:
            with ctx.wrap_socket(raw, server_hostname=lab.hostname):
                return 0
        except ssl.SSLCertVerificationError as exc:
            return int(exc.verify_code)


@pytest.mark.parametrize("problem", [None, *aia_ext.testing.PROBLEMS])
def test_each_lab_problem_fails_as_documented(problem, engine):
    with Lab(problem=problem, delay=0.5) as lab:
        plain = ssl.create_default_context(cafile=lab.root_file)
        assert _verify_code(lab, plain) == 20
        assert lab.fetches == 0
        ctx = aia_ext.create_default_context(cafile=lab.root_file, timeout=5,
                                             learn_intermediates=False)
        assert _verify_code(lab, ctx) == lab.expected_verify_code
        assert lab.fetches == FETCHES[problem]


def test_a_slow_ca_issuers_url_outlasts_a_short_timeout(engine):
    import time

    with Lab(problem="slow-ca-issuers", delay=2.0) as lab:
        ctx = aia_ext.create_default_context(cafile=lab.root_file, timeout=0.5)
        started = time.monotonic()
        assert _verify_code(lab, ctx) == 20
        assert time.monotonic() - started < 1.8
        assert lab.fetches == 1


@pytest.mark.parametrize("bad", [{"problem": "missing-intermediate"}, {"delay": -1.0}])
def test_a_lab_refuses_what_it_cannot_be(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        Lab(**bad)


@pytest.mark.parametrize("request_line, keeps_open", [
    (b"GET / HTTP/1.0\r\n\r\n", False),
    (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", True),
    (b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n", True),
])
def test_the_lab_closes_an_http_1_0_connection_after_answering(request_line, keeps_open,
                                                                aia_lab):
    """An HTTP/1.0 client reads to the end of the connection: the server held it for
    30 s (its idle timeout) before closing."""
    import socket
    import time

    ctx = aia_ext.create_default_context(cafile=aia_lab.root_file)
    with socket.create_connection(("127.0.0.1", aia_lab.port), timeout=30) as raw, \
            ctx.wrap_socket(raw, server_hostname="localhost") as tls:
        tls.sendall(request_line)
        tls.settimeout(1.0)
        started, received, closed = time.monotonic(), b"", False
        try:
            while True:
                data = tls.recv(4096)
                if not data:
                    closed = True
                    break
                received += data
        except (socket.timeout, TimeoutError):
            pass
    assert received.endswith(b"\r\n\r\nok\n")
    assert closed is not keeps_open
    if closed:
        assert time.monotonic() - started < 0.9


def test_demo_serve_prints_the_lines_that_make_the_docs_examples_run(tmp_path):
    """Issue 32, item 7: the docs' examples ran against ``demo --serve`` only with
    SSL_CERT_FILE set to the lab's root, and nothing said so."""
    import os
    import shlex
    import sys

    process = subprocess.Popen(
        aia_ext_with_ctrl_c("demo", "--serve", "--dir", str(tmp_path / "lab")),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        printed = []
        for line in process.stdout:
            printed.append(line)
            if line.startswith("  try:"):
                break
        [export] = [line.split()[1] for line in printed if line.strip().startswith("export ")]
        name, _, value = export.partition("=")
        [url] = [line.split("->")[1].strip(" )\n") for line in printed if "example.com" in line]
        assert name == "SSL_CERT_FILE"
        # A docs example as a user runs it: the system store, the lab's URL.
        example = ("import urllib.request, aia_ext\n"
                   "ctx = aia_ext.create_default_context()\n"
                   f"print(urllib.request.urlopen({url!r}, context=ctx).read())\n")
        env = {**os.environ, name: shlex.split(value)[0]}
        ran = subprocess.run([sys.executable, "-c", example], env=env, capture_output=True,
                             text=True, timeout=60, check=False)
        assert ran.stdout == "b'ok\\n'\n", ran.stderr
        assert any(line.startswith("  engine:") for line in printed)
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
