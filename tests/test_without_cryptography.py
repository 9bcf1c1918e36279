"""Issue 16: without cryptography, the native engine works and the rest says why not.

On PyPy 3.10+ cryptography is optional (pyproject.toml's [cryptography]
extra): PyPy 8 has no wheel at all.  This module needs neither cryptography
nor the suite's conftest (the lab needs cryptography): its certificates come
from the ``openssl`` command, so it also runs alone on such an interpreter as
``python -m pytest --noconftest tests/test_without_cryptography.py``
(.ci/debian.sh does, on Debian testing's PyPy).  Elsewhere the child process
blocks the import of cryptography, as if it were not installed.

A real chain: root -> intermediate -> leaf, the leaf's AIA pointing at a
loopback HTTP server; the TLS server sends the leaf alone.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.engine_agnostic

OPENSSL_CONFIG = """
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[root]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[intermediate]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[leaf]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
authorityInfoAccess = caIssuers;URI:{aia_url}
"""


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _make_chain(directory: Path, aia_url: str) -> None:
    """root.pem, intermediate.der, leaf.pem and leaf.key in ``directory``."""
    (directory / "openssl.cnf").write_text(OPENSSL_CONFIG.format(aia_url=aia_url))
    for name in ("root", "intermediate", "leaf"):
        _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out",
                 f"{name}.key", cwd=directory)
    _openssl("req", "-x509", "-new", "-config", "openssl.cnf", "-extensions", "root",
             "-key", "root.key", "-subj", "/CN=aia_ext no-cryptography root", "-days", "2",
             "-out", "root.pem", cwd=directory)
    for name, issuer, serial in (("intermediate", "root", "2"), ("leaf", "intermediate", "3")):
        subject = "/CN=localhost" if name == "leaf" else "/CN=aia_ext no-cryptography CA"
        _openssl("req", "-new", "-config", "openssl.cnf", "-key", f"{name}.key",
                 "-subj", subject, "-out", f"{name}.csr", cwd=directory)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{issuer}.pem",
                 "-CAkey", f"{issuer}.key", "-set_serial", serial, "-days", "2",
                 "-sha256", "-extfile", "openssl.cnf", "-extensions", name,
                 "-out", f"{name}.pem", cwd=directory)
    _openssl("x509", "-in", "intermediate.pem", "-outform", "DER", "-out", "intermediate.der",
             cwd=directory)


class _AIA(http.server.ThreadingHTTPServer):
    daemon_threads = True
    hits: Counter[str]
    body: bytes


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _AIA

    def do_GET(self) -> None:
        self.server.hits[self.path] += 1
        self.send_response(200)
        self.send_header("Content-Type", "application/pkix-cert")
        self.send_header("Content-Length", str(len(self.server.body)))
        self.end_headers()
        self.wfile.write(self.server.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _serve_tls(listener: socket.socket, context: ssl.SSLContext, stop: threading.Event) -> None:
    listener.settimeout(0.1)
    while not stop.is_set():
        try:
            conn, _ = listener.accept()
        except OSError:
            continue
        conn.settimeout(10)
        try:
            with context.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1024)
                tls.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
        except (OSError, ssl.SSLError):
            conn.close()  # the client refused the chain: nothing to answer


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[dict[str, Any]]:
    if shutil.which("openssl") is None:
        pytest.fail("the openssl command is needed to make certificates without cryptography")
    aia = _AIA(("127.0.0.1", 0), _Handler)
    aia.hits = Counter()
    url = f"http://127.0.0.1:{aia.server_address[1]}/intermediate.der"
    _make_chain(tmp_path, url)
    aia.body = (tmp_path / "intermediate.der").read_bytes()
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    # str: PyPy 3.9's load_cert_chain takes no path objects.
    server_context.load_cert_chain(str(tmp_path / "leaf.pem"), str(tmp_path / "leaf.key"))
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()
    threads = [threading.Thread(target=aia.serve_forever, daemon=True),
               threading.Thread(target=_serve_tls, args=(listener, server_context, stop),
                                daemon=True)]
    for thread in threads:
        thread.start()
    try:
        yield {"root": str(tmp_path / "root.pem"), "port": listener.getsockname()[1],
               "aia": aia}
    finally:
        stop.set()
        aia.shutdown()
        aia.server_close()
        listener.close()
        for thread in threads:
            thread.join(5)


CHILD = r"""
import json, os, socket, ssl, sys
sys.modules["cryptography"] = None  # as if it were not installed
import aia_ext

root, port = sys.argv[1], int(sys.argv[2])
out = {}

def get(ctx):
    with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"GET / HTTP/1.0\r\n\r\n")
            return tls.recv(100).decode()

try:
    get(ssl.create_default_context(cafile=root))
except ssl.SSLCertVerificationError as exc:
    out["plain"] = exc.verify_code
ctx = aia_ext.create_default_context(cafile=root)
out["engine"] = aia_ext.engine_of(ctx)
out["response"] = get(ctx)
try:
    import aia_ext.diagnosis
except aia_ext.MissingDependencyError as exc:
    out["diagnosis"] = str(exc)
os.environ["AIA_EXT_ENGINE"] = "fallback"
try:
    aia_ext.create_default_context(cafile=root)
except aia_ext.MissingDependencyError as exc:
    out["fallback"] = str(exc)
out["cryptography_loaded"] = any(
    m.startswith("cryptography.") for m in sys.modules if sys.modules[m] is not None)
print(json.dumps(out))
"""


def _native_binds() -> bool:
    # Not tests/helpers.py's: that module imports cryptography, which this file's
    # row has not got.
    import aia_ext

    try:
        aia_ext._private.binding.bind()
    except aia_ext.UnsupportedPlatformError:
        return False
    return True


@pytest.mark.skipif(not _native_binds(), reason="the native engine cannot bind here")
def test_the_native_engine_completes_a_chain_without_cryptography(lab):
    env = {k: v for k, v in os.environ.items() if k != "AIA_EXT_ENGINE"}
    result = subprocess.run([sys.executable, "-c", CHILD, lab["root"], str(lab["port"])],
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["plain"] == 20  # the chain is really incomplete
    assert out["engine"] == "native"
    assert out["response"].endswith("ok")
    assert lab["aia"].hits["/intermediate.der"] == 1
    # Asking for a feature that needs cryptography is a clear error, not a crash.
    for feature in ("diagnosis", "fallback"):
        assert "needs the cryptography package" in out[feature]
        assert "pip install 'aia-ext[cryptography]'" in out[feature]
    assert out["cryptography_loaded"] is False
