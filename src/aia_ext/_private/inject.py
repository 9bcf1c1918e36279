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

import logging
import ssl
import threading
from typing import Any

from .context import enable, stdlib_context_class
from .options import make_options

__all__ = ["extract_from_ssl", "inject_into_ssl", "is_injected"]

log = logging.getLogger(__name__)

_lock = threading.Lock()
_saved: Any = None  # the original __dict__["__new__"] of ssl's SSLContext, while injected
_options: dict[str, Any] = {}


def inject_into_ssl(**options: Any) -> None:
    """Enable AIA chasing on every SSLContext created from now on, process-wide.

    Idempotent and thread-safe; calling it again replaces the options.  Raises
    UnsupportedPlatformError where the native engine cannot work.
    """
    from . import native

    make_options(options)  # validate first
    native.engine()  # AIA_EXT_ENGINE=native where it cannot work raises here
    global _saved
    with _lock:
        _options.clear()
        _options.update(options)
        if _saved is not None:
            return
        cls = stdlib_context_class()
        saved = cls.__dict__["__new__"]
        original = saved.__func__ if isinstance(saved, staticmethod) else saved

        def __new__(klass: type[ssl.SSLContext], protocol: Any = None, *args: Any,
                    **kwargs: Any) -> ssl.SSLContext:
            context: ssl.SSLContext = original(klass, protocol, *args, **kwargs)
            if native.engine() == "native":
                enable(context, **_options)
            elif klass is cls:
                # Fallback engine: the new plain context becomes an
                # aia_ext.SSLContext.  A subclass's instance (truststore's outer
                # context) keeps its class; its inner standard one is switched.
                from .sslcontext import adopt

                adopt(context, dict(_options), default_paths=False)
            return context

        cls.__new__ = staticmethod(__new__)  # type: ignore[method-assign,assignment]
        _saved = saved
    log.debug("AIA chasing injected into ssl.SSLContext")


def extract_from_ssl() -> None:
    """Undo ``inject_into_ssl()`` exactly (a no-op if it is not in force)."""
    global _saved
    with _lock:
        if _saved is None:
            return
        stdlib_context_class().__new__ = _saved  # type: ignore[method-assign]
        _saved = None
        _options.clear()
    log.debug("AIA chasing extracted from ssl.SSLContext")


def is_injected() -> bool:
    """Whether ``inject_into_ssl()`` is in force."""
    with _lock:
        return _saved is not None
