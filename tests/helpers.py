"""Plain helpers shared by the tests (fixtures are in conftest.py).

Every helper drives a real handshake or reads what a real server saw; none
stands in for the verifier or the socket.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import pathlib
import socket
import ssl
import subprocess
import sys
import sysconfig
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import urlsplit

import pytest
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7

from aia_ext._private import x509_codes as codes
from aia_ext._private.testing import AIAServer, Cert, TLSServer

#: The verify codes tests assert, by name (OpenSSL's X509_V_ERR_*).
CODES = codes
PARTIAL_CHAIN = getattr(ssl, "VERIFY_X509_PARTIAL_CHAIN", 0x80000)

_paths = itertools.count(1)


def unique_path(suffix: str = ".der") -> str:
    """A caIssuers path no other test uses, so tests never share cache entries."""
    return f"/ca/{next(_paths)}{suffix}"


async def closed(writer: asyncio.StreamWriter) -> None:
    """Close a stream and wait for its TLS shutdown: a transport left to the collector
    warns (ResourceWarning, an error under the 3.15 debug build's ``-W error``), in
    whichever later test the collection happens to run."""
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass  # the server closed first, without close_notify: closed all the same


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


def subject_hash(cert: Cert) -> str:
    """The file name OpenSSL's capath lookup reads ``cert`` from (``openssl rehash``)."""
    from cryptography.hazmat.bindings.openssl.binding import Binding

    ffi, lib = Binding.ffi, Binding.lib
    der = cert.der
    data = ffi.from_buffer(der)  # pinned while the BIO reads it (PyPy copies bytes per call)
    bio = lib.BIO_new_mem_buf(data, len(der))
    x509 = lib.d2i_X509_bio(bio, ffi.NULL)
    lib.BIO_free(bio)
    try:
        return f"{lib.X509_NAME_hash(lib.X509_get_subject_name(x509)):08x}.0"
    finally:
        lib.X509_free(x509)


def native_available() -> bool:
    """Whether the native engine binds in this installation (not a pure one)."""
    import aia_ext

    try:
        aia_ext._private.binding.bind()
    except aia_ext.UnsupportedPlatformError:
        return False
    return True


#: For tests that need the native engine itself, not just one engine each.
needs_native = pytest.mark.skipif(not native_available(),
                                  reason="the native engine cannot bind here (a pure install)")


#: Makes Ctrl-C a KeyboardInterrupt in a child Python even when this test run was
#: started with SIGINT ignored (a background job of a non-interactive shell): the
#: ignore is inherited, and Python installs its handler only over the default.
_CTRL_C = "import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "


def python_with_ctrl_c(code: str, *args: str) -> list[str]:
    """``python -c code args``, interruptible by SIGINT."""
    return [sys.executable, "-c", _CTRL_C + code, *args]


def aia_ext_with_ctrl_c(*args: str) -> list[str]:
    """``python -m aia_ext args``, interruptible by SIGINT."""
    return python_with_ctrl_c(
        "import runpy; runpy.run_module('aia_ext', run_name='__main__', alter_sys=True)", *args)


#: The AIA_EXT_INJECT hook: a .pth line, and the module it imports.
HOOK = "aia_ext-inject.pth"
HOOK_SOURCE = pathlib.Path(__file__).resolve().parent.parent / "src" / HOOK
_WAITER = "_aia_ext_hook.py"


def _site_dir(tmp_path: pathlib.Path) -> str | None:
    """None when the hook is installed in site-packages (CI installs the wheel); else a
    directory holding it (an editable install has no .pth)."""
    if (pathlib.Path(sysconfig.get_paths()["purelib"]) / HOOK).exists():
        return None
    directory = tmp_path / "site"
    directory.mkdir(exist_ok=True)
    # Some interpreters (Debian's PyPy) read a site directory's .pth files
    # twice; the hook runs once (a "_aia_ext_inject_pth" entry marks it).
    (directory / HOOK).write_text(HOOK_SOURCE.read_text())
    (directory / _WAITER).write_text((HOOK_SOURCE.parent / _WAITER).read_text())
    return str(directory)


def run_python(code: str, tmp_path: pathlib.Path, *args: str, timeout: float = 60,
               **env: str) -> subprocess.CompletedProcess[str]:
    """``python -c code args`` in a fresh interpreter, with the AIA_EXT_INJECT hook in a
    site directory as the wheel installs it; ``env`` on top of this process's."""
    site_dir = _site_dir(tmp_path)
    prelude = "" if site_dir is None else f"import site; site.addsitedir({site_dir!r}); "
    environment = {k: v for k, v in os.environ.items() if k != "AIA_EXT_INJECT"}
    environment.update(env)
    return subprocess.run([sys.executable, "-c", prelude + code, *args], capture_output=True,
                          text=True, env=environment, timeout=timeout, check=False)
