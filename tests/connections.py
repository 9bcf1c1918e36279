"""One client connection, driven the same way over a socket or an SSLObject, and its outcomes.

``open_connection(ctx, address, transport)`` wraps a real TCP connection to
127.0.0.1 without handshaking (``do_handshake_on_connect=False``); every
call goes through the connection's own ``do_handshake``/``read``/``write``,
an SSLObject pumped over the socket as asyncio pumps one (its outgoing bytes
are sent after a call succeeds or wants to read, never after a failure).

``outcome(call)`` is what a test compares between plain ``ssl`` and aia_ext:
the value, or the exception's class, and for a verification failure its
verify code, its verify message and its text without the ``(_ssl.c:NNNN)``
that differs between call sites.
"""

from __future__ import annotations

import functools
import re
import socket
import ssl
from typing import Any, Callable

TRANSPORTS = ("socket", "sslobject")


class BioConnection:
    """An SSLObject on memory BIOs over a real socket, with SSLSocket's calls."""

    def __init__(self, obj: ssl.SSLObject, raw: socket.socket, incoming: ssl.MemoryBIO,
                 outgoing: ssl.MemoryBIO) -> None:
        self.obj, self.raw, self._incoming, self._outgoing = obj, raw, incoming, outgoing

    @property
    def context(self) -> ssl.SSLContext:
        return self.obj.context

    @context.setter
    def context(self, ctx: ssl.SSLContext) -> None:
        self.obj.context = ctx

    def _flush(self) -> None:
        data = self._outgoing.read()
        if data:
            self.raw.sendall(data)

    def _pump(self, call: Callable[[], Any]) -> Any:
        while True:
            try:
                result = call()
            except ssl.SSLWantReadError:
                self._flush()
                data = self.raw.recv(65536)
                if data:
                    self._incoming.write(data)
                else:
                    self._incoming.write_eof()
                continue
            self._flush()
            return result

    def do_handshake(self) -> None:
        self._pump(self.obj.do_handshake)

    def sendall(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[self._pump(functools.partial(self.obj.write, view)):]

    def recv(self, size: int) -> bytes:
        return bytes(self._pump(lambda: self.obj.read(size)))

    def getpeercert(self, binary_form: bool = False) -> Any:
        return self.obj.getpeercert(binary_form)

    @property
    def session(self) -> Any:
        return self.obj.session

    @property
    def session_reused(self) -> bool:
        return self.obj.session_reused

    def version(self) -> str | None:
        return self.obj.version()

    def close(self) -> None:
        self.raw.close()


def open_connection(ctx: ssl.SSLContext, address: tuple[str, int], transport: str,
                    hostname: str = "localhost", session: Any = None) -> Any:
    raw = socket.create_connection(address, timeout=30)
    try:
        if transport == "socket":
            return ctx.wrap_socket(raw, server_hostname=hostname,
                                   do_handshake_on_connect=False, session=session)
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = ctx.wrap_bio(incoming, outgoing, server_hostname=hostname, session=session)
    except BaseException:
        raw.close()  # a refused session (ValueError) must not leave the socket to the GC
        raise
    return BioConnection(obj, raw, incoming, outgoing)


def ask(conn: Any, line: bytes) -> bytes:
    """One line out, one line back (RenegotiatingServer's protocol)."""
    conn.sendall(line + b"\n")
    answer = b""
    while not answer.endswith(b"\n"):
        data = conn.recv(64)
        if not data:
            raise ConnectionError(f"the server closed after {line!r}")
        answer += data
    return answer.strip()


_SUFFIX = re.compile(r"\s*\(_ssl\.c:\d+\)\s*$")


def outcome(call: Callable[[], Any]) -> tuple[Any, ...]:
    try:
        value = call()
    except ssl.SSLCertVerificationError as exc:
        return ("refused", exc.verify_code, exc.verify_message, _SUFFIX.sub("", str(exc)))
    except Exception as exc:  # noqa: BLE001 - the class is the outcome
        return (type(exc).__name__,)
    return ("ok", value)
