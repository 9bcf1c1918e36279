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
