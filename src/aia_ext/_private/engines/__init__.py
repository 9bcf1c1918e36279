"""Which engine applies: decided here, and only here.

``select()`` answers for ``ssl.SSLContext`` objects, from ``AIA_EXT_ENGINE``:

- ``auto`` (the default): native wherever it binds, else fallback;
- ``native``: native, or ``UnsupportedPlatformError`` saying why it cannot bind;
- ``fallback``: the fallback engine, even where native would bind (for
  debugging, and for running the test suite under it).

``for_context()`` answers for one object: the engine already enabled on it,
pyOpenSSL's for an ``OpenSSL.SSL.Context``, else ``select()``.  The variable is
read on every call, so a test or a process may change it between contexts.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from .base import ConnectionChase, EngineName, OfflineResult
from .fallback import ENGINE as FALLBACK
from .fallback.context import VerifyingContext
from .native import ENGINE as NATIVE
from .pyopenssl import ENGINE as PYOPENSSL
from .pyopenssl import is_pyopenssl_context

if TYPE_CHECKING:
    from .base import Engine

__all__ = [
    "ALL",
    "CHOICES",
    "ConnectionChase",
    "EngineName",
    "OfflineResult",
    "VerifyingContext",
    "enabled_engine",
    "for_context",
    "is_pyopenssl_context",
    "select",
]

#: Values of AIA_EXT_ENGINE.
CHOICES = ("auto", "native", "fallback")
#: Every engine, in the order a connection's report is looked up.
ALL: tuple[Engine, ...] = (FALLBACK, NATIVE, PYOPENSSL)


def _choice() -> str:
    choice = os.environ.get("AIA_EXT_ENGINE", "auto").strip().lower() or "auto"
    if choice not in CHOICES:
        raise ValueError(f"AIA_EXT_ENGINE must be one of {', '.join(CHOICES)}, not {choice!r}")
    return choice


def select() -> Engine:
    """The engine for ``ssl.SSLContext`` objects in this process, now."""
    choice = _choice()
    if choice == "fallback":
        return FALLBACK
    if choice == "native":
        NATIVE.require()
        return NATIVE
    return NATIVE if NATIVE.available() else FALLBACK


def enabled_engine(context: object) -> Engine | None:
    """The engine chasing on ``context``, or None."""
    if is_pyopenssl_context(context):
        return PYOPENSSL if PYOPENSSL.is_enabled(context) else None
    for engine in (FALLBACK, NATIVE):
        if engine.is_enabled(context):
            return engine
    return None


def for_context(context: Any) -> Engine:
    """The engine that enables ``context``: the one in force on it, else the selected one."""
    if is_pyopenssl_context(context):
        return PYOPENSSL
    return enabled_engine(context) or select()
