"""The fallback engine's cache of successful verdicts, as browsers keep one.

Chromium keeps its verifier's results (``CachingCertVerifier``) because a
server presents the same chain to every connection; so does this module, for
the part of the fallback's work that costs most per handshake: cryptography's
path validation and the checks OpenSSL adds (rules.py).

The key is everything the verdict depends on (issue 13): the chain handed to
the verifier (the served leaf, then every intermediate: served, from the
pool, fetched), the peer name checked (None when hostname checking is off),
the context's verify flags and security level, and the identity of the trust
store it was built from (a new build is a new identity).  A context's change
to any of these misses.  An entry is used only while the clock is inside
every certificate's validity window of the verified path, for at most
``MAX_AGE`` seconds, and at most ``MAX_ENTRIES`` are kept (least recently
used go first).  Only successes are kept: a refused chain is verified again,
so that its report and verify code are always fresh.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Hashable
from typing import NamedTuple

#: Verdicts kept, at most (least recently used dropped first).
MAX_ENTRIES = 512
#: Seconds one verdict is trusted, at most, whatever the certificates allow.
MAX_AGE = 600.0


class _Entry(NamedTuple):
    chain: tuple[bytes, ...]  # the verified path, DER, leaf first
    not_before: float  # POSIX time: the latest notBefore of the path
    not_after: float  # the earliest notAfter
    stored_at: float  # time.monotonic()


_lock = threading.Lock()
_entries: OrderedDict[Hashable, _Entry] = OrderedDict()


def get(key: Hashable) -> tuple[bytes, ...] | None:
    """The verified path cached for ``key``, if it may still be used now."""
    with _lock:
        entry = _entries.get(key)
        if entry is None:
            return None
        now = time.time()
        if (not entry.not_before <= now <= entry.not_after
                or time.monotonic() - entry.stored_at > MAX_AGE):
            del _entries[key]
            return None
        _entries.move_to_end(key)
        return entry.chain


def put(key: Hashable, chain: tuple[bytes, ...], not_before: float, not_after: float) -> None:
    entry = _Entry(chain, not_before, not_after, time.monotonic())
    with _lock:
        _entries[key] = entry
        _entries.move_to_end(key)
        while len(_entries) > MAX_ENTRIES:
            _entries.popitem(last=False)


def clear() -> None:
    with _lock:
        _entries.clear()


def size() -> int:
    with _lock:
        return len(_entries)
