"""TLS sessions the fallback engine may let a connection resume.

A resumed handshake carries no certificates, and OpenSSL did not verify the
handshake that made the session (its verification was set aside), so OpenSSL
would resume any session it holds.  Plain ``ssl`` takes a resumed session's
verdict from the handshake that made it, and a session whose handshake
failed is never offered (OpenSSL marks it not resumable).  The fallback does
the same with the sessions it knows: a session is recorded here, by its id,
when it is read (``SSLSocket.session``, ``SSLObject.session``) from a
connection the fallback verified, or from one whose verification OpenSSL
kept (not set aside: plain ``ssl``'s rules apply to it).  Any other session
(from a refused connection, one never seen, one forgotten: at most
``MAX_SESSIONS`` are kept) is not offered by a connection whose verification
is set aside, as plain ``ssl`` would not offer a failed one, and a server
resuming it anyway is refused (issue 26, item 2; issue 30).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict

#: Sessions remembered, at most (least recently used forgotten first).
MAX_SESSIONS = 1024


class VerifiedSession:
    __slots__ = ("chain", "chase_id")

    def __init__(self, chain: tuple[bytes, ...], chase_id: int) -> None:
        self.chain = chain  # the path verified for the handshake that made it, if known
        self.chase_id = chase_id  # that handshake's chase (0: nothing was chased)


def session_id(session: object) -> bytes:
    # CPython gives bytes; PyPy's _ssl gives a list of ints.  Anything else (an
    # object we do not know) has no identity we could vouch for.
    value = getattr(session, "id", b"")
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, (list, tuple)) and all(
            isinstance(b, int) and 0 <= b < 256 for b in value):
        return bytes(value)
    return b""


_lock = threading.Lock()
_sessions: OrderedDict[bytes, VerifiedSession] = OrderedDict()


def remember(session_id: bytes, verified: VerifiedSession) -> None:
    if not session_id:
        return
    with _lock:
        _sessions[session_id] = verified
        _sessions.move_to_end(session_id)
        while len(_sessions) > MAX_SESSIONS:
            _sessions.popitem(last=False)


def recall(session_id: bytes) -> VerifiedSession | None:
    if not session_id:
        return None
    with _lock:
        found = _sessions.get(session_id)
        if found is not None:
            _sessions.move_to_end(session_id)
        return found


def _reset_after_fork() -> None:
    global _lock
    _lock = threading.Lock()  # another thread may have held it at fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)
