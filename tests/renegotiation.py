"""A TLS server on 127.0.0.1 that renegotiates when asked, presenting another certificate.

Python's ``ssl`` cannot start a renegotiation, so the server calls
``SSL_renegotiate`` and ``SSL_do_handshake`` of the interpreter's own libssl
on its own connection (ctypes, through the library ``_ssl`` loaded; PyPy's
``_pypy_openssl``).  Everything else is plain ``ssl`` on a real socket.

The protocol, one line each way:

- ``PING`` -> ``PONG``;
- ``RENEG <name>``: the server switches to the context serving certificate
  ``<name>`` (``SSLSocket.context``, i.e. ``SSL_set_SSL_CTX``), sends a
  HelloRequest, drives the new handshake to its end, then answers ``DONE``.
  The client's renegotiation happens inside its ``recv()`` of that answer;
- ``BYE``: the server closes.

Server contexts are made with the standard class's original ``__new__``, so
no injection a test turns on reaches them, and they turn off resumption on
renegotiation (SSL_OP_NO_SESSION_RESUMPTION_ON_RENEGOTIATION): the server's
certificate is presented, and verified, on every renegotiation.
"""

from __future__ import annotations

import ctypes
import os
import select
import socket
import ssl
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Sequence
from typing import Any

from aia_ext._private.stdlib_ssl import new_plain_context
from aia_ext._private.testing import Cert

#: SSL_OP_NO_SESSION_RESUMPTION_ON_RENEGOTIATION (include/openssl/ssl.h).
_NO_RESUMPTION_ON_RENEGOTIATION = 0x00010000


class _LibSSL:
    """SSL_renegotiate, SSL_do_handshake and SSL_renegotiate_pending on a connection of
    this interpreter's ``_ssl``."""

    def __init__(self) -> None:
        if sys.implementation.name == "pypy":
            from _pypy_openssl import lib  # type: ignore[import-not-found]

            self._pypy = lib
            return
        self._pypy = None
        lib = ctypes.CDLL(ssl._ssl.__file__)  # type: ignore[attr-defined]
        for name in ("SSL_renegotiate", "SSL_do_handshake", "SSL_renegotiate_pending"):
            getattr(lib, name).argtypes = [ctypes.c_void_p]
            getattr(lib, name).restype = ctypes.c_int
        self._lib = lib

    def _ssl(self, tls: ssl.SSLSocket) -> Any:
        sslobj = tls._sslobj  # type: ignore[attr-defined]
        if self._pypy is not None:
            return sslobj.ssl
        # PySSLSocket starts {PyObject_HEAD; PyObject *Socket; SSL *ssl; ...}
        # (Modules/_ssl.c), as docs/design.md says the native engine reads it.
        offset = object.__basicsize__ + ctypes.sizeof(ctypes.c_void_p)
        return ctypes.c_void_p.from_address(id(sslobj) + offset).value

    def call(self, name: str, tls: ssl.SSLSocket) -> int:
        lib = self._pypy if self._pypy is not None else self._lib
        return int(getattr(lib, name)(self._ssl(tls)))


def renegotiation_available() -> str | None:
    """None when this interpreter's OpenSSL can be driven to renegotiate; else why not."""
    try:
        _LibSSL()
    except (ImportError, OSError, AttributeError) as exc:
        return f"the interpreter's libssl cannot be reached: {exc}"
    return None


class RenegotiatingServer:
    """The server; ``certificates`` maps a name to (leaf, served intermediates)."""

    def __init__(self, certificates: dict[str, tuple[Cert, Sequence[Cert]]], first: str,
                 maximum_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2) -> None:
        self._libssl: _LibSSL | None = None  # only once a test renegotiates
        self._dir = tempfile.TemporaryDirectory(prefix="aia-ext-reneg-")
        self.contexts: dict[str, ssl.SSLContext] = {}
        for name, (leaf, chain) in certificates.items():
            path = os.path.join(self._dir.name, f"{len(self.contexts)}.pem")
            with open(path, "wb") as f:
                f.write(leaf.pem + b"".join(c.pem for c in chain) + leaf.key_pem)
            context = new_plain_context(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(path)
            context.maximum_version = maximum_version
            context.options |= _NO_RESUMPTION_ON_RENEGOTIATION
            self.contexts[name] = context
        self.first = first
        #: What happened per connection: "handshake", "renegotiated", "failed".
        self.events: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._sock = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.address = ("127.0.0.1", int(self._sock.getsockname()[1]))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        try:
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() at once
        except OSError:
            pass
        self._sock.close()
        self._thread.join(5)
        self._dir.cleanup()

    def __enter__(self) -> RenegotiatingServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def handshakes(self) -> int:
        """Connections whose first handshake the server completed, so far."""
        with self._lock:
            return self.events["handshake"]

    def _count(self, event: str) -> None:
        with self._lock:
            self.events[event] += 1

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue  # closed: the loop ends
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(30)
        try:
            tls = self.contexts[self.first].wrap_socket(conn, server_side=True)
        except (OSError, ssl.SSLError):
            self._count("failed")
            conn.close()
            return
        self._count("handshake")
        try:
            buffered = b""
            while True:
                while b"\n" not in buffered:
                    data = tls.recv(4096)
                    if not data:
                        return
                    buffered += data
                line, _, buffered = buffered.partition(b"\n")
                if line == b"PING":
                    tls.sendall(b"PONG\n")
                elif line.startswith(b"RENEG "):
                    self._renegotiate(tls, line[6:].decode())
                    tls.sendall(b"DONE\n")
                else:
                    return
        except (OSError, ssl.SSLError):
            self._count("failed")
        finally:
            tls.close()

    @property
    def _lib(self) -> _LibSSL:
        if self._libssl is None:
            self._libssl = _LibSSL()
        return self._libssl

    def _renegotiate(self, tls: ssl.SSLSocket, name: str) -> None:
        tls.context = self.contexts[name]
        if self._lib.call("SSL_renegotiate", tls) != 1 \
                or self._lib.call("SSL_do_handshake", tls) != 1:
            raise ssl.SSLError("the server could not start a renegotiation")
        # The client answers the HelloRequest; the new handshake runs inside
        # the server's reads, which return no data until it is over.
        tls.setblocking(False)
        try:
            while self._lib.call("SSL_renegotiate_pending", tls):
                try:
                    if not tls.recv(1):
                        raise ConnectionError("the client left during the renegotiation")
                except ssl.SSLWantReadError:
                    if not self._lib.call("SSL_renegotiate_pending", tls):
                        break  # over: the read now waits for data the client has none of
                    if not select.select([tls], [], [], 30)[0]:
                        raise TimeoutError("the client never renegotiated") from None
        finally:
            tls.setblocking(True)
        self._count("renegotiated")


def ask(tls: Any, line: bytes) -> bytes:
    """Send one line, return the answer line (a renegotiation happens inside)."""
    tls.sendall(line + b"\n")
    answer = b""
    while not answer.endswith(b"\n"):
        data = tls.recv(64)
        if not data:
            raise ConnectionError(f"the server closed after {line!r}")
        answer += data
    return answer.strip()


def lab(root: Cert, aia: Any, directory: str) -> dict[str, Any]:
    """The certificates the tests' renegotiating servers present, by name, and the two
    trust files: ``good`` and ``other_name`` with their intermediate, ``leaf_only``
    whose intermediate only its caIssuers URL serves, ``untrusted`` from another root.
    """
    from aia_ext._private.testing import issue, write_pem

    from .helpers import unique_path

    stranger = issue("Stranger Root", ca=True)
    intermediate = issue("Served Intermediate", root, ca=True)
    url = aia.url(unique_path())
    fetched = issue("Fetched Intermediate", root, ca=True)
    aia.serve(aia.path_of(url), fetched.der)
    return {
        "good": (issue("localhost", intermediate, dns=["localhost"]), [intermediate]),
        "leaf_only": (issue("localhost", fetched, dns=["localhost"], aia=[url]), []),
        "fetched": fetched,
        "untrusted": (issue("localhost", stranger, dns=["localhost"]), []),
        "other_name": (issue("other.test", intermediate, dns=["other.test"]), [intermediate]),
        "stranger_file": write_pem(os.path.join(directory, "stranger.pem"), stranger),
    }


NAMES = ("good", "leaf_only", "untrusted", "other_name")


class Servers:
    """Renegotiating servers made on first use, one per (first certificate, version,
    complete): with ``complete``, the leaf-only certificate comes with its intermediate."""

    def __init__(self, pki: dict[str, Any]) -> None:
        self.pki = pki
        self._made: dict[tuple[str, ssl.TLSVersion, bool], RenegotiatingServer] = {}

    def get(self, first: str, version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3,
            complete: bool = False) -> RenegotiatingServer:
        key = (first, version, complete)
        if key not in self._made:
            certificates = {name: self.pki[name] for name in NAMES}
            if complete:
                certificates["leaf_only"] = (self.pki["leaf_only"][0], [self.pki["fetched"]])
            self._made[key] = RenegotiatingServer(certificates, first, version)
        return self._made[key]

    def close(self) -> None:
        for srv in self._made.values():
            srv.close()
