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
import sys

from ..errors import UnsupportedPlatformError
from .base import ConnectionChase, OfflineResult
from .fallback import ENGINE as FALLBACK
from .fallback.context import VerifyingContext, register_combiner
from .fallback.state import register_options_lookup
from .native import ENGINE as NATIVE
from .pyopenssl import ENGINE as PYOPENSSL
from .pyopenssl import is_pyopenssl_context

TYPE_CHECKING = False  # typing's, without importing typing (~3 ms)
if TYPE_CHECKING:
    from typing import Any

    from .base import EngineName

if TYPE_CHECKING:
    from ..options import Options
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
    "register_combiner",
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


def refuse_without_gil() -> None:
    """Refuse a free-threaded interpreter running without its GIL (issue 16).

    The chase's state, the native engine's token table and the caches take
    locks, but no free-threaded interpreter could be obtained to prove the C
    callback's state and cffi's callbacks safe without the GIL, so enabling is
    refused rather than claimed.  cffi's extension does not declare
    ``Py_mod_gil_not_used``, so importing it normally turns the GIL back on;
    this catches ``PYTHON_GIL=0`` / ``-X gil=0``, which keep it off.
    """
    gil_enabled = getattr(sys, "_is_gil_enabled", None)
    if gil_enabled is not None and not gil_enabled():
        raise UnsupportedPlatformError(
            "aia_ext is not proven safe on a free-threaded interpreter without its GIL; "
            "run with the GIL (PYTHON_GIL=1 or -X gil=1) to use it (docs/engines.md)")


def select() -> Engine:
    """The engine for ``ssl.SSLContext`` objects in this process, now."""
    refuse_without_gil()
    choice = _choice()
    if choice == "fallback":
        return FALLBACK
    if choice == "native":
        NATIVE.require()
        return NATIVE
    return NATIVE if NATIVE.available() else FALLBACK


def describe() -> str:
    """Which engine new contexts get here, and why: ``aia-ext --version`` and the demo
    say it, as a source install without a compiler goes pure silently otherwise
    (issue 32, item 7)."""
    try:
        choice = _choice()
        refuse_without_gil()
    except (ValueError, UnsupportedPlatformError) as exc:
        return f"none: {exc}"
    why_not_native = ""
    if choice != "fallback":
        try:
            NATIVE.require()
        except UnsupportedPlatformError as exc:
            if choice == "native":
                return f"none: AIA_EXT_ENGINE=native, but {exc}"
            why_not_native = str(exc)
        else:
            import ssl

            return f"native (in the {ssl.OPENSSL_VERSION} that Python's ssl uses)"
    import importlib.util

    why = "AIA_EXT_ENGINE=fallback" if choice == "fallback" else why_not_native
    if importlib.util.find_spec("cryptography") is None:
        return f"none: the fallback engine needs cryptography, not installed ({why})"
    return f"fallback ({why})"


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
        refuse_without_gil()
        return PYOPENSSL
    return enabled_engine(context) or select()


def _options_of_enabled(context: Any) -> Options | None:
    engine = enabled_engine(context)
    return engine.options_of(context) if engine is not None else None


# A fallback connection whose context was swapped for one enabled by another
# engine completes chains with that context's options (engines/fallback/state.py).
register_options_lookup(_options_of_enabled)
