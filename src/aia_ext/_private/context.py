"""Enabling AIA chasing on ``ssl.SSLContext`` objects, and the default context.

Per-context state is a token that C receives as its callback argument plus
the validated options; it lives exactly as long as the context (a weak
reference's finalizer forgets it).
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
import weakref
from typing import TYPE_CHECKING, Any, Union

from . import native
from .errors import UnsupportedPlatformError
from .options import make_options

if TYPE_CHECKING:
    from .sslcontext import SSLContext

__all__ = ["create_default_context", "disable", "enable", "is_enabled"]

log = logging.getLogger(__name__)

_tokens: weakref.WeakKeyDictionary[ssl.SSLContext, int] = weakref.WeakKeyDictionary()
_lock = threading.Lock()

StrPath = Union[str, "os.PathLike[str]"]


def stdlib_context_class() -> type[ssl.SSLContext]:
    """The class defined in ssl.py, even where ``ssl.SSLContext`` names a subclass.

    truststore.inject_into_ssl() rebinds the name; the contexts it builds
    inside are instances of the standard class, not of its own.
    """
    for cls in ssl.SSLContext.__mro__:
        if cls.__module__ == "ssl" and cls.__name__ == "SSLContext":
            return cls
    raise RuntimeError("ssl.SSLContext is not derived from the standard library's class")


def _require_context(context: object) -> ssl.SSLContext:
    if not isinstance(context, stdlib_context_class()):
        raise TypeError(
            f"expected an ssl.SSLContext, got {type(context).__module__}.{type(context).__name__}"
        )
    return context


def enable(context: ssl.SSLContext, **options: Any) -> ssl.SSLContext:
    """Install AIA chasing on ``context`` in place and return it.

    Enabling again replaces the options; nothing else about the context's
    verification changes.  Also accepts an ``OpenSSL.SSL.Context`` (pyOpenSSL),
    completed through its verify callback.
    """
    from .pyopenssl import enable_pyopenssl, is_pyopenssl_context

    if is_pyopenssl_context(context):
        return enable_pyopenssl(context, options)  # type: ignore[no-any-return]
    _require_context(context)
    opts = make_options(options)
    if native.engine() == "fallback":
        from . import sslcontext

        if sslcontext.set_options(context, options):
            return context
        raise UnsupportedPlatformError(
            f"{native.unavailable_reason()} So a plain ssl.SSLContext cannot be enabled in "
            "place here: use aia_ext.create_default_context(), aia_ext.SSLContext(...) or "
            "aia_ext.inject_into_ssl(), which verify after the handshake instead.")
    with _lock:
        token = _tokens.get(context)
        new_token = native.install(context, opts, token)
        if token is None:
            _tokens[context] = new_token
            weakref.finalize(context, native.forget, new_token)
    return context


def disable(context: ssl.SSLContext) -> ssl.SSLContext:
    """Remove AIA chasing from ``context`` (a no-op if it was not enabled)."""
    from .pyopenssl import disable_pyopenssl, is_pyopenssl_context

    if is_pyopenssl_context(context):
        return disable_pyopenssl(context)  # type: ignore[no-any-return]
    _require_context(context)
    from . import sslcontext

    if sslcontext.drop_fallback(context):
        return context
    with _lock:
        token = _tokens.pop(context, None)
        if token is not None:
            native.uninstall(context, token)
    return context


def token_of(context: ssl.SSLContext) -> int:
    """The callback token of an enabled context (0 if it is not enabled)."""
    with _lock:
        return _tokens.get(context, 0)


def is_enabled(context: ssl.SSLContext) -> bool:
    """Whether ``enable()`` is in force on ``context``."""
    from .pyopenssl import is_pyopenssl_context, pyopenssl_enabled

    if is_pyopenssl_context(context):
        return pyopenssl_enabled(context)
    _require_context(context)
    if "_aia_fallback" in getattr(context, "__dict__", {}):
        return True
    with _lock:
        return context in _tokens


def _system_store_has_certificates(context: ssl.SSLContext) -> str | None:
    """Where the system trust store was found, or None if it is empty."""
    if context.get_ca_certs():
        return "certificates loaded into the context"
    paths = ssl.get_default_verify_paths()
    if paths.cafile and os.path.isfile(paths.cafile) and os.path.getsize(paths.cafile) > 0:
        return paths.cafile
    if paths.capath and os.path.isdir(paths.capath):
        with os.scandir(paths.capath) as entries:
            if any(entry.is_file() for entry in entries):
                return paths.capath
    return None


def create_default_context(
    purpose: ssl.Purpose = ssl.Purpose.SERVER_AUTH,
    *,
    cafile: StrPath | None = None,
    capath: StrPath | None = None,
    cadata: str | bytes | None = None,
    **options: Any,
) -> SSLContext:
    """``ssl.create_default_context()`` with AIA chasing enabled.

    With no CA argument, the system trust store is used when it holds
    certificates, and certifi's bundle otherwise; the choice is logged at DEBUG.
    """
    from .sslcontext import adopt

    make_options(options)  # validate before any file is read
    default_paths = cafile is None and capath is None and cadata is None
    if not default_paths:
        context = ssl.create_default_context(purpose, cafile=cafile, capath=capath, cadata=cadata)
    else:
        context = ssl.create_default_context(purpose)
        source = _system_store_has_certificates(context)
        if source is None:
            import certifi

            context.load_verify_locations(cafile=certifi.where())
            log.debug("system trust store is empty; using certifi (%s)", certifi.where())
        else:
            log.debug("using the system trust store (%s)", source)
    # The standard library's context, every default of this Python version
    # kept, becomes an aia_ext.SSLContext with the engine that can work here.
    return adopt(context, options, default_paths and source is not None,
                 (os.fspath(capath),) if capath is not None else ())
