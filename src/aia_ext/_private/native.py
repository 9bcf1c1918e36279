"""The bridge to the C part: binding to _ssl's OpenSSL and the two Python callbacks.

The C callback receives an integer *token* as its ``arg``, never a pointer to
a Python object: if a context's state is gone, the lookup fails and the
verification simply gets no extra certificates (fail closed) instead of
touching freed memory.
"""

from __future__ import annotations

import importlib
import itertools
import logging
import os
import ssl
import sys
import threading
from collections import OrderedDict
from types import TracebackType
from typing import Any, Callable, cast

from .errors import UnsupportedPlatformError
from .options import Options

__all__ = ["bind", "install", "openssl_library_path", "uninstall"]

log = logging.getLogger(__name__)

_tokens = itertools.count(1)
_options_by_token: dict[int, Options] = {}
_bind_lock = threading.Lock()
_bound: Any | None = None  # the cffi module once bound
_bind_error: UnsupportedPlatformError | None = None

_ADVICE = (
    "aia_ext's native engine needs the interpreter's ssl module to use a shared "
    "OpenSSL it can reach (a python.org, distribution or pyenv CPython, or PyPy). "
    "Interpreters that link OpenSSL statically with hidden symbols (for example "
    "python-build-standalone, which uv installs) are not supported by it."
)


def _library_of_ssl() -> tuple[str, int]:
    """(file to dlopen, OpenSSL_version_num() of the library _ssl calls)."""
    if sys.implementation.name == "pypy":
        # PyPy's _ssl is cffi-based: its OpenSSL is behind _pypy_openssl, and
        # ssl.OPENSSL_VERSION_NUMBER is the version PyPy was built against,
        # so ask the library itself what it is.
        try:
            import _pypy_openssl
        except ImportError:
            raise UnsupportedPlatformError(f"this PyPy has no _pypy_openssl. {_ADVICE}") from None
        return str(_pypy_openssl.__file__), int(_pypy_openssl.lib.OpenSSL_version_num())
    if sys.implementation.name != "cpython":
        raise UnsupportedPlatformError(f"{sys.implementation.name} is not supported. {_ADVICE}")
    import _ssl

    path = getattr(_ssl, "__file__", None)
    if not path:
        raise UnsupportedPlatformError(
            f"_ssl is built into the interpreter, so its OpenSSL cannot be located. {_ADVICE}")
    return str(path), ssl.OPENSSL_VERSION_NUMBER


def _load() -> Any:
    try:
        # The compiled cffi module; untyped, hence Any.
        _native: Any = importlib.import_module("aia_ext._native")
    except ImportError as exc:
        raise UnsupportedPlatformError(
            f"the aia_ext._native extension cannot be imported ({exc}); reinstall "
            f"aia_ext for this interpreter. {_ADVICE}"
        ) from exc
    path, expected = _library_of_ssl()
    ffi, lib = _native.ffi, _native.lib
    err = ffi.new("char[]", 512)
    if not lib.aia_ext_bind(os.fsencode(path), err, len(err)):
        reason = ffi.string(err).decode("utf-8", "replace")
        raise UnsupportedPlatformError(f"cannot bind to _ssl's OpenSSL: {reason}. {_ADVICE}")
    version = lib.aia_ext_openssl_version_num()
    if version != expected:
        raise UnsupportedPlatformError(
            f"the OpenSSL reachable from _ssl reports version {version:#x}, but ssl uses "
            f"{expected:#x} ({ssl.OPENSSL_VERSION}); refusing to drive one "
            f"library's SSL_CTX with another's code. {_ADVICE}"
        )
    _define_callbacks(ffi, lib)
    log.debug("bound to %s (%s) through %s", openssl_library_path(lib, ffi),
              ssl.OPENSSL_VERSION, path)
    return _native


def bind() -> Any:
    """The bound cffi module; UnsupportedPlatformError (cached) if impossible."""
    global _bound, _bind_error
    if _bound is not None:
        return _bound
    with _bind_lock:
        if _bound is None:
            if _bind_error is not None:
                raise _bind_error
            try:
                _bound = _load()
            except UnsupportedPlatformError as exc:
                _bind_error = exc
                raise
    return _bound


ENGINES = ("auto", "native", "fallback")


def engine() -> str:
    """The engine in force: "native" or "fallback" (``AIA_EXT_ENGINE`` decides).

    ``auto`` (the default) is native wherever it binds; ``native`` raises
    UnsupportedPlatformError where it cannot; ``fallback`` forces the Python
    verifier, for debugging and for the test suite.
    """
    choice = os.environ.get("AIA_EXT_ENGINE", "auto").strip().lower() or "auto"
    if choice not in ENGINES:
        raise ValueError(f"AIA_EXT_ENGINE must be one of {', '.join(ENGINES)}, not {choice!r}")
    if choice == "fallback":
        return "fallback"
    if choice == "native":
        bind()
        return "native"
    try:
        bind()
    except UnsupportedPlatformError:
        return "fallback"
    return "native"


def unavailable_reason() -> str:
    """Why the native engine is not in force (for error messages)."""
    if os.environ.get("AIA_EXT_ENGINE", "").strip().lower() == "fallback":
        return "AIA_EXT_ENGINE=fallback is set."
    return str(_bind_error) if _bind_error is not None else "the native engine is not bound."


def _pypy_pointer(cdata: Any) -> Any:
    """A cffi pointer of PyPy's own _ssl bindings, as a ``void *`` of our module."""
    import _pypy_openssl

    return bind().ffi.cast("void *", int(_pypy_openssl.ffi.cast("uintptr_t", cdata)))


def ssl_ctx_pointer(context: object) -> Any:
    """The SSL_CTX* of an ssl.SSLContext, as a cffi ``void *`` of our module."""
    if sys.implementation.name == "pypy":
        return _pypy_pointer(context.ctx)  # type: ignore[attr-defined]
    import _ssl

    if not isinstance(context, _ssl._SSLContext):
        raise TypeError(f"expected an ssl.SSLContext, got {type(context).__name__}")
    module = bind()
    # id() is the object's address in CPython; C reads the SSL_CTX* field
    # that follows the object header (see csrc/aia_ext.c).
    return module.lib.aia_ext_cpython_ssl_ctx(module.ffi.cast("void *", id(context)))


def low_level_socket_type() -> type:
    """The type of ``SSLSocket._sslobj`` / ``SSLObject._sslobj`` on this interpreter."""
    if sys.implementation.name == "pypy":
        from _cffi_ssl._stdssl import _SSLSocket

        return cast(type, _SSLSocket)
    import _ssl

    return cast(type, getattr(_ssl, "_SSLSocket"))  # noqa: B009 - not in typeshed


def ssl_pointer(sslobj: object) -> Any:
    """The SSL* of a low-level ``_ssl._SSLSocket``, as a cffi ``void *``."""
    if sys.implementation.name == "pypy":
        return _pypy_pointer(sslobj.ssl)  # type: ignore[attr-defined]
    module = bind()
    return module.lib.aia_ext_cpython_ssl(module.ffi.cast("void *", id(sslobj)))


def session_of(sslobj: object) -> int:
    """The chase session id stored on a low-level socket's SSL, or 0."""
    return int(bind().lib.aia_ext_session_of(ssl_pointer(sslobj)))


def _indexed_ders(read: Callable[[int, Any, int], int]) -> list[bytes]:
    """Certificates from a C reader ``read(index, out, outlen) -> length or -1``."""
    ffi = bind().ffi
    ders = []
    for index in range(64):
        size = read(index, ffi.NULL, 0)
        if size < 0:
            break
        buf = ffi.new("unsigned char[]", size)
        if read(index, buf, size) != size:
            break
        ders.append(bytes(ffi.buffer(buf, size)))
    return ders


def peer_chain(sslobj: object) -> list[bytes]:
    """The DER certificates the peer sent (leaf first), verified or not."""
    ssl_ptr = ssl_pointer(sslobj)
    lib = bind().lib
    return _indexed_ders(lambda i, out, n: int(lib.aia_ext_peer_chain_der(ssl_ptr, i, out, n)))


def served_chain(conn: Any) -> list[bytes]:
    """What the peer of an SSLSocket/SSLObject sent (DER, leaf first), verified or not.

    OpenSSL's SSL_get_peer_cert_chain where the library is reachable (every
    Python version); else the interpreter's get_unverified_chain (3.10+);
    else the leaf alone (3.9 without a reachable OpenSSL).
    """
    sslobj = getattr(conn, "_sslobj", None)
    try:
        return peer_chain(sslobj)
    except UnsupportedPlatformError:
        pass
    getter = getattr(sslobj, "get_unverified_chain", None)
    if getter is not None:
        return [c if isinstance(c, bytes) else c.public_bytes(ssl._ssl.ENCODING_DER)  # type: ignore[attr-defined]
                for c in getter() or []]
    leaf = conn.getpeercert(binary_form=True)
    return [leaf] if leaf else []


def store_chain(store_ctx: Any) -> list[bytes]:
    """The chain the last X509_verify_cert built in ``store_ctx`` (leaf first)."""
    lib = bind().lib
    return _indexed_ders(lambda i, out, n: int(lib.aia_ext_chain_der(store_ctx, i, out, n)))


def openssl_library_path(lib: Any = None, ffi: Any = None) -> str:
    """File name of the libssl the native engine is bound to ("" if unknown)."""
    if lib is None:
        module = bind()
        lib, ffi = module.lib, module.ffi
    out = ffi.new("char[]", 4096)
    lib.aia_ext_bound_library_path(out, len(out))
    return str(ffi.string(out).decode("utf-8", "replace"))


def install(context: ssl.SSLContext, options: Options, token: int | None) -> int:
    """Set the callback on ``context``'s SSL_CTX; returns the token to keep."""
    module = bind()
    pointer = ssl_ctx_pointer(context)
    if token is None:
        token = next(_tokens)
    _options_by_token[token] = options
    if not module.lib.aia_ext_install(pointer, token):
        _options_by_token.pop(token, None)
        raise UnsupportedPlatformError("the SSLContext holds no SSL_CTX")
    return token


def uninstall(context: ssl.SSLContext, token: int) -> None:
    """Remove the callback from ``context`` and forget its options."""
    bind().lib.aia_ext_uninstall(ssl_ctx_pointer(context))
    forget(token)


def forget(token: int) -> None:
    """Drop the options of a token (its context is gone or disabled)."""
    _options_by_token.pop(token, None)


#: DER -> parsed X509 (cffi pointer freed with aia_ext_x509_free), most
#: recently used last.  Fetched issuers recur across handshakes; parsing each
#: once saves OpenSSL 3.0's slow d2i_X509 on every warm-cache handshake.
_MAX_PARSED = 256
_parsed_x509: OrderedDict[bytes, Any] = OrderedDict()
_parsed_lock = threading.Lock()


def _after_fork_in_child() -> None:
    global _parsed_lock
    _parsed_lock = threading.Lock()  # another thread may have held it at fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _parsed(ffi: Any, lib: Any, der: bytes) -> Any | None:
    with _parsed_lock:
        x509 = _parsed_x509.get(der)
        if x509 is not None:
            _parsed_x509.move_to_end(der)
            return x509
    x509 = lib.aia_ext_x509_new(der, len(der))
    if x509 == ffi.NULL:
        return None
    x509 = ffi.gc(x509, lib.aia_ext_x509_free)
    with _parsed_lock:
        _parsed_x509[der] = x509
        while len(_parsed_x509) > _MAX_PARSED:
            _parsed_x509.popitem(last=False)
    return x509


def _callback_error(
    exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None
) -> None:
    # cffi then returns the declared error value (0: no certificates), so a
    # bug or an interrupt on this path fails closed (DESIGN.md invariant 4).
    log.error("aia_ext internal error in the verify callback; no certificates added",
              exc_info=(exc_type, exc, tb))


def _define_callbacks(ffi: Any, lib: Any) -> None:
    def aia_ext_py_missing(token: int, session_ptr: Any, ssl_ptr: Any, store_ctx: Any,
                           der: Any, der_len: int, depth: int, error: int) -> int:
        options = _options_by_token.get(token)
        if options is None:
            return 0
        # Imported here, not at module level: a complete chain never gets this
        # far, and the fetch path (http.client, cryptography) is slow to import.
        from . import chase

        session, session_ptr[0] = chase.session_for(session_ptr[0], options)
        def add(cert_der: bytes) -> int:
            x509 = _parsed(ffi, lib, cert_der)
            return -1 if x509 is None else int(lib.aia_ext_add_untrusted(store_ctx, x509))

        return chase.missing(session, bytes(ffi.buffer(der, der_len)), depth, error, add)

    def aia_ext_py_done(token: int, session_id: int, ssl_ptr: Any, store_ctx: Any,
                        ok: int, error: int, depth: int) -> None:
        from . import chase

        chase.done(session_id, bool(ok), error, depth)

    # Not decorators: cffi is untyped, and a plain call keeps mypy --strict quiet.
    ffi.def_extern(onerror=_callback_error)(aia_ext_py_missing)
    ffi.def_extern(onerror=_callback_error)(aia_ext_py_done)
