"""Recently finished chases, kept for ``report()`` and ``diagnose()``.

A chase id reaches the caller through the connection (the native engine's
SSL ex_data, the fallback engine's socket); this registry turns it back into
the chase.  It is bounded: the oldest are dropped first.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from .core import Chase

#: Finished chases kept; a report asked for later than this is None.
MAX_FINISHED = 1024
#: Called with every finished chase (the benchmarks' timing breakdown).
observers: list[Callable[[Chase], None]] = []

_finished: OrderedDict[int, Chase] = OrderedDict()
_lock = threading.Lock()


def record(chase: Chase) -> None:
    with _lock:
        _finished[chase.id] = chase
        while len(_finished) > MAX_FINISHED:
            _finished.popitem(last=False)
    for observer in tuple(observers):
        observer(chase)


def get(chase_id: int) -> Chase | None:
    """A finished chase, if it is still among the most recent MAX_FINISHED."""
    with _lock:
        return _finished.get(chase_id)


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()  # another thread may have held it at fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
