"""Failures that explain themselves, and interrupts that are never swallowed.

After a chase that still failed, the ``ssl.SSLCertVerificationError`` carries the
chase (``exc.aia_report``) and, on Python 3.11+, a note a person can act on.
Ctrl-C during a fetch surfaces as KeyboardInterrupt, promptly, in a real child
process against real loopback servers.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

import aia_ext
from aia_ext._private.testing import issue

from .helpers import aia_ext_with_ctrl_c, python_with_ctrl_c, unique_path

HAS_NOTES = sys.version_info >= (3, 11)


def _failure(ctx: ssl.SSLContext, srv) -> ssl.SSLCertVerificationError:
    with socket.create_connection(srv.address, timeout=30) as raw:
        with pytest.raises(ssl.SSLCertVerificationError) as info:
            ctx.wrap_socket(raw, server_hostname="localhost")
    return info.value


def test_an_untrusted_root_after_a_fetch_is_explained(make_chain, server, root_file):
    chain = make_chain(issuer_root=issue("a root nobody trusts", ca=True))
    ctx = aia_ext.create_default_context(cafile=root_file)
    error = _failure(ctx, server(chain.leaf))
    assert error.verify_code == 20
    report = error.aia_report  # type: ignore[attr-defined]
    assert isinstance(report, aia_ext.Report) and not report.verified
    assert [(a.url, a.source) for a in report.added] == [(chain.urls[0], "network")]
    # In repr(), on every Python: wrapping clients show it (issue 25); str() stays ssl's.
    assert str(error).startswith("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: "
                                 "unable to get local issuer certificate")
    assert "aia_ext" not in str(error)
    message = repr(error)
    assert "Intermediate 0" in message and chain.urls[0] in message
    assert "CN=a root nobody trusts is not in the trust store" in message
    if HAS_NOTES:
        assert "CN=a root nobody trusts is not in the trust store" in error.__notes__[0]


@pytest.mark.parametrize("shape", ["untrusted root", "dead url", "two levels, top dead"])
def test_the_warning_and_the_exception_give_the_same_cause(shape, make_chain, server, root_file,
                                                            aia, caplog):
    """Issue 32, item 2: with an untrusted root the WARNING ended "CN=... Intermediate
    CA: no caIssuers URL" (the intermediate's own lack of a URL) while the note said
    the root is not in the trust store; pip shows only the WARNING."""
    import logging

    from aia_ext._private.records import explain

    if shape == "untrusted root":
        chain = make_chain(issuer_root=issue("a root nobody trusts", ca=True))
        cause = "its issuer CN=a root nobody trusts is not in the trust store"
    elif shape == "dead url":
        chain = make_chain(serve=False)
        cause = f"could not fetch the missing issuer ({chain.urls[0]}: HTTP 404"
    else:
        chain = make_chain(levels=2)
        aia.serve(aia.path_of(chain.urls[1]), b"gone", status=410)
        cause = (f"aia_ext added CN=Intermediate 0 from {chain.urls[0]}; its issuer "
                 f"CN=Intermediate 1 is not in the trust store")
    ctx = aia_ext.create_default_context(cafile=root_file)
    with caplog.at_level(logging.WARNING, logger="aia_ext"):
        error = _failure(ctx, server(chain.leaf))
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    sentence = explain(error.aia_report)  # type: ignore[attr-defined]
    assert cause in sentence
    assert warning.endswith(": " + sentence)
    assert "no caIssuers URL" not in warning
    if HAS_NOTES:
        assert error.__notes__ == [sentence]


def test_a_failed_fetch_is_explained(server, root, root_file, aia):
    inter = issue("Intermediate", root, ca=True)
    url = aia.serve(unique_path(), b"gone", status=410)
    leaf = issue("localhost", inter, aia=[url], dns=["localhost"])
    error = _failure(aia_ext.create_default_context(cafile=root_file), server(leaf))
    report = error.aia_report  # type: ignore[attr-defined]
    assert [(f.url, f.reason) for f in report.failed] == [(url, "HTTP 410: Gone")]
    assert f"could not fetch the missing issuer ({url}: HTTP 410: Gone)" in repr(error)


def test_the_explanation_reaches_urllib_callers(make_chain, server, root_file):
    chain = make_chain(issuer_root=issue("a root nobody trusts", ca=True))
    ctx = aia_ext.create_default_context(cafile=root_file)
    with pytest.raises(urllib.error.URLError) as info:
        urllib.request.urlopen(server(chain.leaf).url, context=ctx, timeout=30)
    assert info.value.reason.aia_report.added  # type: ignore[union-attr]


def test_the_reason_reaches_requests_users(make_chain, server, root_file, monkeypatch):
    """What a user sees, requests' own message, carries the reason (issue 25)."""
    requests = pytest.importorskip("requests")
    from aia_ext.requests import AIAAdapter

    chain = make_chain(issuer_root=issue("a root nobody trusts", ca=True))
    session = requests.Session()
    session.mount("https://", AIAAdapter(aia_ext.create_default_context(cafile=root_file)))
    with pytest.raises(requests.exceptions.SSLError) as info:
        session.get(server(chain.leaf).url, timeout=30)
    assert "CN=a root nobody trusts is not in the trust store" in str(info.value)


def test_a_failure_without_a_chase_is_plain_ssl(make_chain, server, root_file):
    chain = make_chain()
    ctx = aia_ext.create_default_context(cafile=root_file)
    with socket.create_connection(server(chain.leaf, chain.intermediates).address) as raw:
        with pytest.raises(ssl.SSLCertVerificationError) as info:
            ctx.wrap_socket(raw, server_hostname="not-this-host.example")
    assert info.value.verify_code in (62, 64)
    assert not hasattr(info.value, "aia_report")
    assert not getattr(info.value, "__notes__", None)


CHILD = """
import socket, ssl, sys, time
import aia_ext
ctx = aia_ext.create_default_context(cafile={root_file!r}, timeout=20.0, deadline=30.0)
started = time.monotonic()
try:
    with socket.create_connection(("127.0.0.1", {port}), timeout=30) as raw:
        ctx.wrap_socket(raw, server_hostname="localhost")
except KeyboardInterrupt:
    print("KeyboardInterrupt after %.2f s" % (time.monotonic() - started), flush=True)
    raise SystemExit(7)
except BaseException as exc:
    print("OTHER", type(exc).__name__, exc, flush=True)
    raise SystemExit(1)
print("NO EXCEPTION", flush=True)
"""


def _stalling_leaf(aia, root):
    inter = issue("Intermediate", root, ca=True)
    path = unique_path()

    def stall(handler) -> None:
        time.sleep(15)

    url = aia.serve(path, b"", handler=stall)
    return issue("localhost", inter, aia=[url], dns=["localhost"]), path


def _interrupt_when_fetching(process: subprocess.Popen, aia, path: str) -> float:
    deadline = time.monotonic() + 20
    while aia.hits[path] == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert aia.hits[path] == 1, "the child never fetched"
    time.sleep(0.2)  # inside the fetch's read now
    sent = time.monotonic()
    process.send_signal(signal.SIGINT)
    return sent


@pytest.mark.skipif(sys.platform == "win32", reason="sends SIGINT")
def test_ctrl_c_during_a_fetch_raises_keyboard_interrupt(aia, root, root_file, server, engine):
    leaf, path = _stalling_leaf(aia, root)
    srv = server(leaf)
    process = subprocess.Popen(
        python_with_ctrl_c(CHILD.format(root_file=root_file, port=srv.port)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    sent = _interrupt_when_fetching(process, aia, path)
    out, err = process.communicate(timeout=20)
    ended = time.monotonic()
    assert "KeyboardInterrupt after" in out, (out, err)
    assert process.returncode == 7
    assert ended - sent < 3.0  # promptly, not after the 20 s fetch timeout
    assert "internal error" not in err and "CERTIFICATE_VERIFY_FAILED" not in out


@pytest.mark.skipif(sys.platform == "win32", reason="sends SIGINT")
def test_ctrl_c_in_the_cli_exits_130_without_a_verdict(aia, root, root_file, server, engine):
    leaf, path = _stalling_leaf(aia, root)
    srv = server(leaf)
    process = subprocess.Popen(
        aia_ext_with_ctrl_c("check", f"https://localhost:{srv.port}/", "--cafile", root_file,
                            "--timeout", "20"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    _interrupt_when_fetching(process, aia, path)
    out, err = process.communicate(timeout=20)
    assert process.returncode == 130, (out, err)
    assert out == "" and "Traceback" not in err and "Verdict" not in err


def test_the_explanation_sentence_is_escaped():
    from aia_ext._private.records import AddedCertificate, FailedAttempt, Report, explain

    report = Report(False, 20, "unable to get local issuer certificate",
                    (AddedCertificate("CN=x\r\nforged", "CN=y\x1b[2J", "http://u/", "network", 1,
                                      0.0, b""),), (), (), 1, 0.0)
    sentence = explain(report)
    assert "\r" not in sentence and "\n" not in sentence and "\x1b" not in sentence
    report = Report(False, 20, "unable", (), (FailedAttempt("http://u/\n", "CN=z", "timeout"),),
                    (), 1, 0.0)
    assert "\n" not in explain(report)


def test_without_logging_configured_nothing_reaches_stderr(make_chain, server, root_file):
    """Issue 14, 4: the WARNING went to every application's stderr (logging's last resort)."""
    chain = make_chain(issuer_root=issue("a root nobody trusts", ca=True))
    srv = server(chain.leaf)
    code = (f"import socket, ssl, aia_ext\n"
            f"ctx = aia_ext.create_default_context(cafile={root_file!r})\n"
            f"raw = socket.create_connection(('127.0.0.1', {srv.port}))\n"
            f"try:\n    ctx.wrap_socket(raw, server_hostname='localhost')\n"
            f"except ssl.SSLCertVerificationError as exc:\n    print(exc.verify_code)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, env=dict(os.environ))
    assert result.stdout.strip() == "20" and result.stderr == ""


def test_the_cli_renders_a_failure_once(make_chain, server, root_file):
    chain = make_chain(issuer_root=issue("a root nobody trusts", ca=True))
    srv = server(chain.leaf)
    result = subprocess.run([sys.executable, "-m", "aia_ext", "check",
                             f"https://localhost:{srv.port}/", "--cafile", root_file],
                            capture_output=True, text=True, timeout=60, env=dict(os.environ))
    assert result.returncode == 4  # inconclusive: the root's caIssuers URL answers 404
    assert result.stderr == ""  # no logging line besides the rendering
    assert result.stdout.count("Verdict: INCONCLUSIVE") == 1
