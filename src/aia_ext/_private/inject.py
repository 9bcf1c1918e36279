"""Process-wide injection: every ``ssl.SSLContext`` created afterwards chases AIA.

With the fallback engine, each new plain context becomes an
``aia_ext.SSLContext`` (its class switched in place); the name
``ssl.SSLContext`` is never rebound, because ssl.py's own property setters
look that name up (``super(SSLContext, SSLContext)``) and would recurse into
a subclass bound there.

In the manner of truststore, but one level lower.  Instead of replacing the
name ``ssl.SSLContext`` (which truststore also replaces, and which urllib3,
pip's vendored urllib3 and others copy at import time), ``__new__`` of the
standard library's class itself is wrapped.  So:

- contexts made by ``ssl.create_default_context()``, urllib3, requests, httpx,
  aiohttp, pip or any SDK are enabled, whatever name they reached the class by;
- truststore composes in either order: its ``SSLContext`` subclasses the
  standard class and builds an inner standard context, which is enabled;
- ``extract_from_ssl()`` puts back exactly the ``__new__`` that was there.

Contexts created before injection are not changed (``enable()`` them).
"""

from __future__ import annotations

import ssl
import sys
import threading

from . import engines
from .api import adopt, is_truststore_class
from .errors import UnsupportedPlatformError
from .logtext import get_logger
from .options import Options, documented, make_options
from .stdlib_ssl import STDLIB_CONTEXT

TYPE_CHECKING = False  # typing's, without importing typing (~3 ms)
if TYPE_CHECKING:
    from typing import Any

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from .options import OptionsKwargs

log = get_logger(__name__)

_lock = threading.Lock()
_saved: Any = None  # the original __dict__["__new__"] of ssl's SSLContext, while injected
#: The options every new context gets.  Replaced as one immutable value, so
#: a context created while inject_into_ssl() runs again gets the old options
#: or the new ones, never a mixture or the defaults.
_options: Options | None = None


@documented
def inject_into_ssl(**options: Unpack[OptionsKwargs]) -> None:
    """Enable AIA chasing on every SSLContext created from now on, process-wide.

    Idempotent and thread-safe; calling it again replaces the options.
    Contexts created before the call are
    not changed (``enable()`` them); docs/usage.md names the clients that
    create theirs at import time.

    Under the fallback engine, whose every verification runs Python, what a
    verification imports (cryptography's OpenSSL binding, the fetch path and
    h11) is imported here first: a broken installation raises here, once,
    and nothing is injected, instead of failing every context the process
    creates (issue 26, item 11).

    :raises UnsupportedPlatformError: ``AIA_EXT_ENGINE=native`` where the
        native engine cannot bind.
    :raises MissingDependencyError: the fallback engine's verifier cannot be
        imported.
    """
    global _saved, _options
    opts = make_options(options)  # validate first; files are read once, here
    engine = engines.select()  # AIA_EXT_ENGINE=native where it cannot work raises here
    if engine.needs_context_class:
        _require_fallback()
    with _lock:
        _options = opts
        if _saved is not None:
            return
        saved = STDLIB_CONTEXT.__dict__["__new__"]
        original = saved.__func__ if isinstance(saved, staticmethod) else saved

        def __new__(klass: type[ssl.SSLContext], *args: Any, **kwargs: Any) -> ssl.SSLContext:
            # Arguments pass as given: the protocol's default is ssl.py's
            # (PROTOCOL_TLS on 3.9, None on 3.10+; found by CPython's test_ssl).
            context: ssl.SSLContext = original(klass, *args, **kwargs)
            current = _options
            # truststore's outer context makes no connection: the standard
            # context it builds inside does, and is enabled when it is made.
            if current is not None and not is_truststore_class(klass):
                try:
                    adopt(context, current)
                except UnsupportedPlatformError as exc:
                    # A class that cannot become ours (it forbids subclassing):
                    # left to OpenSSL's verification, said once, never a failure
                    # of every context the program makes.
                    _say_not_enabled(klass, exc)
            return context

        STDLIB_CONTEXT.__new__ = staticmethod(__new__)  # type: ignore[method-assign,assignment]
        _saved = saved
    log.debug("AIA chasing injected into ssl.SSLContext")
    _name_contexts_made_before()


_named: set[str] = set()


def _name_contexts_made_before() -> None:
    """One WARNING naming the modules that made a verifying client context before
    injection, where one can be seen: a module-level attribute (aiohttp's connector
    makes its default context when imported).  Injection reaches only contexts made
    afterwards, so those would silently go without AIA (issue 31, item 7)."""
    found = []
    for module_name, module in list(sys.modules.items()):
        attributes = getattr(module, "__dict__", None)
        if not isinstance(attributes, dict) or module_name.split(".")[0] in ("aia_ext", "ssl"):
            continue
        for attribute, value in list(attributes.items()):
            name = f"{module_name}.{attribute}"
            if (isinstance(value, ssl.SSLContext) and name not in _named
                    and value.verify_mode != ssl.CERT_NONE
                    and value.protocol != ssl.PROTOCOL_TLS_SERVER
                    and engines.enabled_engine(value) is None):
                _named.add(name)
                found.append(name)
    if found:
        log.warning("aia_ext.inject_into_ssl(): %s made before injection, so not completing "
                    "chains; call aia_ext.enable() on it, or inject before the module is "
                    "imported", ", ".join(found))


_not_enabled: set[type] = set()


def _say_not_enabled(klass: type, exc: Exception) -> None:
    if klass not in _not_enabled:
        _not_enabled.add(klass)
        log.warning("aia_ext.inject_into_ssl(): contexts of %s.%s are left to ssl's own "
                    "verification: %s", klass.__module__, klass.__qualname__, exc)


def _require_fallback() -> None:
    """Import the fallback's verifier (and through it the fetch path), or say what is missing.

    The native engine needs no such check: a complete chain never reaches
    Python there, and a fetch path that cannot load fails only the chains it
    was to complete (closed).
    """
    from .errors import MissingDependencyError

    try:
        import aia_ext._private.engines.fallback.verify  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(
            f"the fallback engine cannot work in this interpreter ({exc}); nothing was "
            "injected, so ssl's own verification stays in place") from exc


def extract_from_ssl() -> None:
    """Undo ``inject_into_ssl()`` exactly (a no-op if it is not in force)."""
    global _saved, _options
    with _lock:
        if _saved is None:
            return
        STDLIB_CONTEXT.__new__ = _saved  # type: ignore[method-assign]
        _saved = None
        _options = None
    log.debug("AIA chasing extracted from ssl.SSLContext")


def is_injected() -> bool:
    """Whether ``inject_into_ssl()`` is in force."""
    with _lock:
        return _saved is not None
