"""The bridge to the C part: the compiled module bound to the OpenSSL that ``_ssl`` uses.

``bind()`` loads ``aia_ext._native`` and resolves every OpenSSL function it
needs from the library behind the interpreter's ``_ssl`` (docs/design.md,
"Which OpenSSL to call"), refusing with ``UnsupportedPlatformError`` where that
library cannot be reached or is not the one ``ssl`` reports.  The helpers here
read OpenSSL pointers and certificate stacks out of ``_ssl``'s objects.

This module knows nothing of engines or chases: the native engine
(engines/native.py) installs the verify callback and defines the Python side
of it; the fallback engine and diagnosis only read served chains through it.
"""

from __future__ import annotations

import os
import ssl
import sys
import threading

from . import x509_codes
from .errors import UnsupportedPlatformError
from .logtext import get_logger

TYPE_CHECKING = False  # typing's, without importing typing (~3 ms)
if TYPE_CHECKING:
    from typing import Any, Callable

log = get_logger(__name__)

_bind_lock = threading.Lock()
_bound: Any | None = None  # the cffi module once bound
_bind_error: UnsupportedPlatformError | None = None

_ADVICE = (
    "aia_ext's native engine needs the interpreter's ssl module to use a shared "
    "OpenSSL it can reach (a python.org, distribution or pyenv CPython, or PyPy). "
    "Interpreters that link OpenSSL statically with hidden symbols (for example "
    "python-build-standalone, which uv installs) are not supported by it; unset "
    "AIA_EXT_ENGINE (or set it to auto) to use the fallback engine there."
)


def _library_of_ssl() -> tuple[str, int]:
    """(file to dlopen, OpenSSL_version_num() of the library _ssl calls)."""
    if sys.implementation.name == "pypy":
        # PyPy's _ssl is cffi-based: its OpenSSL is behind _pypy_openssl, and
        # ssl.OPENSSL_VERSION_NUMBER is the version PyPy was built against,
        # so ask the library itself what it is.
        try:
            import _pypy_openssl  # PyPy only
        except ImportError:
            raise UnsupportedPlatformError(f"this PyPy has no _pypy_openssl. {_ADVICE}") from None
        return str(_pypy_openssl.__file__), int(_pypy_openssl.lib.OpenSSL_version_num())
    if sys.implementation.name != "cpython":
        raise UnsupportedPlatformError(f"{sys.implementation.name} is not supported. {_ADVICE}")
    import _ssl  # CPython's; PyPy returned above

    path = getattr(_ssl, "__file__", None)
    if not path:
        raise UnsupportedPlatformError(
            f"_ssl is built into the interpreter, so its OpenSSL cannot be located. {_ADVICE}")
    return str(path), ssl.OPENSSL_VERSION_NUMBER


def _load() -> Any:
    try:
        import aia_ext._native as _native  # the compiled part: only when first bound
    except ImportError as exc:
        # (Not importlib.util.find_spec() first: on 3.9 it imports typing.)
        if isinstance(exc, ModuleNotFoundError) and exc.name == "aia_ext._native":
            # A pure install: the py3-none-any wheel, or the sdist where no C
            # compiler was found (setup.py).  The fallback engine verifies instead.
            raise UnsupportedPlatformError(
                "aia_ext was installed without its native extension (the pure wheel, or a "
                "source install without a C compiler); reinstall it with a compiler and the "
                "Python headers, or from a platform wheel, for the native engine") from None
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
    log.debug("bound to %s through %s", ssl.OPENSSL_VERSION, path)
    return _native


def bind() -> Any:
    """The bound cffi module; UnsupportedPlatformError (cached) if impossible."""
    global _bound, _bind_error
    if _bound is not None:
        return _bound
    with _bind_lock:
        if _bound is None:
            if _bind_error is not None:
                # A new exception each time: raising the cached one again would
                # append every caller's frames to its traceback, and so keep
                # every failed connection alive (a pure install leaked ~90 KB
                # per failed handshake).
                raise UnsupportedPlatformError(*_bind_error.args)
            try:
                _bound = _load()
            except UnsupportedPlatformError as exc:
                # Kept without the frames it was raised through.
                _bind_error = UnsupportedPlatformError(*exc.args)
                raise
    return _bound


def bind_error() -> UnsupportedPlatformError | None:
    """Why ``bind()`` failed, if it was tried and failed (None otherwise)."""
    return _bind_error


def _pypy_pointer(cdata: Any) -> Any:
    """A cffi pointer of PyPy's own _ssl bindings, as a ``void *`` of our module."""
    import _pypy_openssl  # PyPy only

    return bind().ffi.cast("void *", int(_pypy_openssl.ffi.cast("uintptr_t", cdata)))


def ssl_ctx_pointer(context: object) -> Any:
    """The SSL_CTX* of an ssl.SSLContext, as a cffi ``void *`` of our module."""
    if sys.implementation.name == "pypy":
        return _pypy_pointer(context.ctx)  # type: ignore[attr-defined]
    import _ssl  # CPython only from here

    if not isinstance(context, _ssl._SSLContext):
        raise TypeError(f"expected an ssl.SSLContext, got {type(context).__name__}")
    module = bind()
    # id() is the object's address in CPython; C reads the SSL_CTX* field
    # that follows the object header (see csrc/aia_ext.c).
    return module.lib.aia_ext_cpython_ssl_ctx(module.ffi.cast("void *", id(context)))


def low_level_socket_type() -> type:
    """The type of ``SSLSocket._sslobj`` / ``SSLObject._sslobj`` on this interpreter."""
    if sys.implementation.name == "pypy":
        from _cffi_ssl._stdssl import _SSLSocket  # PyPy only

        pypy_type: type = _SSLSocket
        return pypy_type
    import _ssl  # CPython only from here

    cpython_type: type = getattr(_ssl, "_SSLSocket")  # noqa: B009 - not in typeshed
    return cpython_type


def ssl_pointer(sslobj: object) -> Any:
    """The SSL* of a low-level ``_ssl._SSLSocket``, as a cffi ``void *``."""
    if not isinstance(sslobj, low_level_socket_type()):
        raise TypeError(f"expected a low-level _ssl socket, got {type(sslobj).__name__}")
    if sys.implementation.name == "pypy":
        return _pypy_pointer(sslobj.ssl)  # type: ignore[attr-defined]
    module = bind()
    return module.lib.aia_ext_cpython_ssl(module.ffi.cast("void *", id(sslobj)))


def chase_id_of(sslobj: object) -> int:
    """The chase id the verify callback stored on a low-level socket's SSL, or 0."""
    return int(bind().lib.aia_ext_chase_id_of(ssl_pointer(sslobj)))


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
    """What the peer of an SSLSocket/SSLObject (or of a low-level ``_ssl`` socket) sent
    (DER, leaf first), verified or not.

    OpenSSL's SSL_get_peer_cert_chain where the library is reachable (every
    Python version); else the interpreter's get_unverified_chain (3.10+);
    else the leaf alone (3.9 without a reachable OpenSSL).
    """
    low_level = low_level_socket_type()
    sslobj = conn if isinstance(conn, low_level) else getattr(conn, "_sslobj", None)
    if not isinstance(sslobj, low_level):
        return []  # not connected, or closed
    try:
        return peer_chain(sslobj)
    except UnsupportedPlatformError:
        pass
    getter = getattr(sslobj, "get_unverified_chain", None)
    if getter is not None:
        return [c if isinstance(c, bytes) else c.public_bytes(ssl._ssl.ENCODING_DER)  # type: ignore[attr-defined]
                for c in getter() or []]
    leaf = sslobj.getpeercert(True)  # type: ignore[attr-defined]
    return [leaf] if leaf else []


def store_chain(store_ctx: Any) -> list[bytes]:
    """The chain the last X509_verify_cert built in ``store_ctx`` (leaf first)."""
    lib = bind().lib
    return _indexed_ders(lambda i, out, n: int(lib.aia_ext_chain_der(store_ctx, i, out, n)))


def verify_error_string(code: int) -> str:
    """OpenSSL's text for a verify code: the bound library's, else the table's."""
    if code == 0:
        return "ok"
    try:
        module = bind()
    except UnsupportedPlatformError:
        return x509_codes.text(code)
    return str(module.ffi.string(module.lib.aia_ext_verify_error_string(code)).decode())


def openssl_library_path() -> str:
    """File name of the libssl the binding resolved (for the "same OpenSSL" test)."""
    module = bind()
    out = module.ffi.new("char[]", 4096)
    module.lib.aia_ext_bound_library_path(out, len(out))
    return str(module.ffi.string(out).decode("utf-8", "replace"))


def forget_learned() -> None:
    """C forgets which intermediates it offered for learning (clear_cache());
    nothing to do where the native part was never bound."""
    if _bound is not None:
        _bound.lib.aia_ext_learned_forget()
