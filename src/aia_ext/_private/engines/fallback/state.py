"""What the fallback engine keeps on a context: one ``ContextState``, and the security level.

A context the fallback verifies for holds one ``ContextState`` under one key of
its ``__dict__`` (a context's class is switched in place, so it cannot gain
slots).  The state only supplies what a client connection *starts* from: its
options and the lock under which the connection is created.  Whatever a
connection's verdict depends on later is the connection's own
(connection.py, docs/design.md invariant 6), so ``disable()`` removing the
state changes connections made afterwards, never one already made.

Light enough for ``import aia_ext``: no cryptography here.
"""

from __future__ import annotations

import threading

TYPE_CHECKING = False  # typing's, without importing typing (~3 ms)
if TYPE_CHECKING:
    from typing import Any, Callable

if TYPE_CHECKING:
    from ...options import Options

#: The key of the fallback state in a context's ``__dict__``.
_STATE_KEY = "_aia_fallback"
#: Where a context keeps the security level its cipher string set.
_SECLEVEL_KEY = "_aia_seclevel"
_SECLEVEL = "@SECLEVEL="


class ContextState:
    """What the fallback engine keeps on a context it is enabled on."""

    __slots__ = ("lock", "options")

    def __init__(self, options: Options) -> None:
        self.options = options
        # Held while a client connection is created with OpenSSL's
        # verification set aside, by every connection created meanwhile
        # (server ones included: SSL_new() copies the verify mode), and by
        # every reader and writer of the verification settings.  Re-entrant:
        # PyPy's _wrap_socket reads check_hostname back through the property.
        self.lock = threading.RLock()


def state_of(context: object) -> ContextState | None:
    state = getattr(context, "__dict__", {}).get(_STATE_KEY)
    return state if isinstance(state, ContextState) else None


def attach(context: object, options: Options) -> ContextState:
    state = ContextState(options)
    context.__dict__[_STATE_KEY] = state
    return state


def detach(context: object) -> None:
    context.__dict__.pop(_STATE_KEY, None)


def note_cipher_string(context: object, cipherlist: str) -> None:
    """Remember the level an "@SECLEVEL=n" in a cipher string set (OpenSSL applies the
    last one given, ssl/ssl_ciph.c); how Python code sets it before 3.10."""
    # Read without re (~2 ms of import): "@SECLEVEL=" and one digit.
    levels = [part[0] for part in cipherlist.split(_SECLEVEL)[1:] if part[:1].isdigit()]
    if levels:
        context.__dict__[_SECLEVEL_KEY] = int(levels[-1])


def security_level(context: object) -> int:
    """The context's security level (``SSLContext.security_level``, 3.10+).

    Before 3.10 (and on PyPy) ``ssl`` does not show it: the level a
    ``set_ciphers("...@SECLEVEL=n")`` on the context set is used, else 2,
    what CPython 3.10+ and Debian's OpenSSL configuration set, rather than
    the laxer library default.
    """
    level = getattr(context, "security_level", None)
    if level is None:
        level = getattr(context, "__dict__", {}).get(_SECLEVEL_KEY, 2)
    return max(0, min(int(level), 5))


#: How the options of a context enabled by *another* engine are found: set by
#: engines/__init__.py, which alone knows every engine (the engines are
#: independent of each other).  A connection whose context was swapped for a
#: natively enabled one completes chains with that context's options, as a
#: native connection would (OpenSSL runs the new context's verify callback).
_other_engines: list[Callable[[Any], Options | None]] = []


def register_options_lookup(lookup: Callable[[Any], Options | None]) -> None:
    _other_engines[:] = [lookup]


def options_for(context: object) -> Options | None:
    """The options aia_ext completes chains with on ``context`` now; None when it is
    not enabled there (the chain is then verified as served, as by plain ssl)."""
    state = state_of(context)
    if state is not None:
        return state.options
    for lookup in _other_engines:
        options = lookup(context)
        if options is not None:
            return options
    return None
