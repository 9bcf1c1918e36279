"""Recently finished chases, kept for ``report()`` and ``diagnose()``.

A chase id reaches the caller through the connection (the native engine's
SSL ex_data, the fallback engine's socket); this registry turns it back into
the chase.  It is bounded: the oldest are dropped first.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import TYPE_CHECKING, Callable

from ..locks import HealingLock

if TYPE_CHECKING:
    from .core import Chase

#: Finished chases kept; a report asked for later than this is None.
MAX_FINISHED = 1024
#: And the certificates they hold, in bytes: a chase keeps the DER of the path
#: it built and of what it added, so 1,024 chases of hostile 100 KB chains would
#: hold ~100 MB (issue 32, item 11).  The oldest go first; a chase larger than
#: this on its own is not kept (its report is None, its exception keeps its note).
MAX_FINISHED_BYTES = 8 * 1024 * 1024
#: What a chase costs besides its certificates (its fields, attempts and lists).
_OVERHEAD = 1024
#: Called with every finished chase (the benchmarks' timing breakdown).
observers: list[Callable[[Chase], None]] = []

class _Kept:
    """A kept chase and the bytes it counts for."""

    __slots__ = ("chase", "size")

    def __init__(self, chase: Chase, size: int) -> None:
        self.chase: Chase | None = chase
        self.size = size


_finished: OrderedDict[int, _Kept] = OrderedDict()  # chase id -> what is kept of it
_held = 0  # bytes the kept chases hold
_lock = HealingLock()


def size_of(chase: Chase) -> int:
    """The bytes a finished chase keeps alive, about: its certificates and texts."""
    ders = sum(map(len, chase.built)) + sum(map(len, chase.path))
    ders += sum(len(added.der) for added in chase.added)
    ders += sum(len(url) + len(child) for url, child in chase.deferred)
    texts = sum(len(a.url) + len(a.outcome) + len(a.for_subject) for a in chase.attempts)
    return _OVERHEAD + ders + texts


def record(chase: Chase) -> None:
    global _held
    size = size_of(chase)
    with _lock:
        if size <= MAX_FINISHED_BYTES:
            _finished[chase.id] = _Kept(chase, size)
            _held += size
        while _finished and (len(_finished) > MAX_FINISHED or _held > MAX_FINISHED_BYTES):
            dropped = _finished.popitem(last=False)[1]
            _held -= dropped.size
            # PyPy's dict keeps a removed entry's value until it compacts: the
            # entry lets go of its chase itself, so the bound holds there too.
            dropped.chase = None
    for observer in tuple(observers):
        observer(chase)


def held() -> tuple[int, int]:
    """(chases kept, bytes they hold): for tests and the benchmarks."""
    with _lock:
        return len(_finished), _held


def get(chase_id: int) -> Chase | None:
    """A finished chase, if it is still among the most recent MAX_FINISHED."""
    with _lock:
        kept = _finished.get(chase_id)
    return None if kept is None else kept.chase


def _after_fork_in_child() -> None:
    global _lock
    _lock = HealingLock()  # another thread may have held it at fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
