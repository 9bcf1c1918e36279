"""Locks that an interrupt cannot leave held by their own thread.

CPython may run a signal handler that raises (SIGINT's KeyboardInterrupt,
an alarm's handler) after a ``with`` block has taken its lock and before
its ``__exit__`` runs (bpo-29988 on 3.9; gh-74174 is open for every version:
seen here on 3.14).  The lock then stays held, and the next ``with`` on it
waits forever: one Ctrl-C at the wrong moment, and every later TLS
connection of the process hangs.  The sections these locks guard never
nest, so a thread that finds the lock held by itself when it enters one
knows an interrupt left it so, and takes it back.
"""

from __future__ import annotations

import threading


class HealingLock:
    """A mutex for sections that never nest; see the module's docstring."""

    __slots__ = ("_lock", "_owned")

    def __init__(self) -> None:
        self._lock = threading.RLock()
        # Private in CPython's and PyPy's RLock alike (threading.Condition uses it).
        self._owned = getattr(self._lock, "_is_owned", None)

    def __enter__(self) -> bool:
        lock = self._lock
        if self._owned is not None:
            while self._owned():  # left held by an interrupted section of this thread
                lock.release()
        return lock.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self._lock.release()
