"""The native engine: OpenSSL itself completes the chain, from inside the handshake.

``enable()`` installs the C verify callback (csrc/verify.c) on the context's
``SSL_CTX`` with ``SSL_CTX_set_cert_verify_callback(3)``.  The callback runs
OpenSSL's own verification; only when that stops on a missing issuer does it
call back into Python (``_on_missing`` below), which asks the chase for
issuers and hands them to C as untrusted chain material.  C re-verifies and
alone decides.

The C callback receives an integer *token* as its ``arg``, never a pointer to
a Python object: if a context's state is gone, the lookup fails and the
verification simply gets no extra certificates (fail closed, docs/design.md
invariant 4) instead of touching freed memory.
"""

from __future__ import annotations

import itertools
import os
import ssl
import threading
import weakref
from collections import OrderedDict
from types import TracebackType

from .. import binding
from ..errors import UnsupportedPlatformError
from ..locks import HealingLock
from ..logtext import get_logger
from ..options import Options
from ..stdlib_ssl import combine_classes, is_standard_context
from ..targets import is_ip_literal
from .base import ConnectionChase, OfflineResult

TYPE_CHECKING = False  # typing's, without importing typing (~3 ms)
if TYPE_CHECKING:
    from typing import Any

    from .base import EngineName

if TYPE_CHECKING:
    import datetime

log = get_logger(__name__)


class NativeEngine:
    """The C verify callback on the interpreter's own OpenSSL (docs/engines.md)."""

    name: EngineName = "native"
    needs_context_class = False

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._options: dict[int, Options] = {}  # token -> options, read by the callback
        self._tokens: weakref.WeakKeyDictionary[ssl.SSLContext, int] = (
            weakref.WeakKeyDictionary())
        self._lock = HealingLock()
        self._callbacks_defined = False
        #: DER -> holder of its parsed X509 (freed with the holder), most recently
        #: used last.  Fetched issuers recur across handshakes; parsing each once
        #: saves OpenSSL 3.0's slow d2i_X509 on every warm-cache handshake.
        self._parsed: OrderedDict[bytes, Any] = OrderedDict()
        self._parsed_lock = HealingLock()
        self._new_holder: Any = None  # cffi's allocator of holders, made on first use

    # -- the seam ---------------------------------------------------------

    def available(self) -> bool:
        try:
            self.require()
        except UnsupportedPlatformError:
            return False
        return True

    def require(self) -> None:
        """Raise UnsupportedPlatformError, saying why, where this engine cannot bind."""
        self._module()

    def enable(self, context: Any, options: Options) -> None:
        if not is_standard_context(context):
            raise TypeError(f"expected an ssl.SSLContext, got {type(context).__name__}")
        module = self._module()
        pointer = binding.ssl_ctx_pointer(context)
        with self._lock:
            old = self._tokens.get(context)
            # A token is the context's number with the "learns" bit below it
            # (AIA_TOKEN_LEARN): C then skips learning without calling Python.
            base = next(self._ids) if old is None else old >> 1
            token = base << 1 | (1 if options.learn_intermediates else 0)
            self._options[token] = options
            if not module.lib.aia_ext_install(pointer, token):
                if token != old:
                    self._options.pop(token, None)
                raise UnsupportedPlatformError("the SSLContext holds no SSL_CTX")
            if old is not None and old != token:
                self._options.pop(old, None)
            self._tokens[context] = token
            if old is None:
                weakref.finalize(context, self._forget_tokens, base)
                _wrap_socket_classes(context)

    def _forget_tokens(self, base: int) -> None:
        self._options.pop(base << 1, None)
        self._options.pop(base << 1 | 1, None)

    def disable(self, context: Any) -> bool:
        with self._lock:
            token = self._tokens.pop(context, None) if is_standard_context(context) else None
            if token is None:
                return False
            binding.bind().lib.aia_ext_uninstall(binding.ssl_ctx_pointer(context))
            self._options.pop(token, None)
        _unwrap_socket_classes(context)
        return True

    def is_enabled(self, context: Any) -> bool:
        if not is_standard_context(context):
            return False
        with self._lock:
            return context in self._tokens

    def options_of(self, context: Any) -> Options | None:
        with self._lock:
            token = self._tokens.get(context) if is_standard_context(context) else None
            return self._options.get(token) if token is not None else None

    def chase_of(self, conn: object) -> ConnectionChase | None:
        try:
            low_level = binding.low_level_socket_type()
        except ImportError:  # pragma: no cover - an interpreter without _ssl
            return None
        if isinstance(conn, (ssl.SSLSocket, ssl.SSLObject)):
            sslobj = getattr(conn, "_sslobj", None)
        elif isinstance(conn, low_level):
            sslobj = conn
        else:
            return None
        if not isinstance(sslobj, low_level) or binding.bind_error() is not None:
            return None
        try:
            chase_id = binding.chase_id_of(sslobj)
        except UnsupportedPlatformError:
            return None
        return ConnectionChase(chase_id, _verified_chain(sslobj))

    def verify_offline(self, context: Any, ders: list[bytes], hostname: str | None,
                       at: datetime.datetime | None) -> OfflineResult:
        """The C chase on an X509_STORE_CTX prepared as libssl prepares a client's."""
        module = self._module()
        ffi, lib = module.ffi, module.lib
        blobs = [ffi.from_buffer(d) for d in ders]
        is_ip = bool(hostname) and is_ip_literal(hostname or "")
        if not hostname:
            host = ffi.NULL
        else:
            host = hostname.encode() if is_ip else hostname.encode("idna")
        holder = self._holder(ffi, lib)
        if not lib.aia_ext_offline_prepare(
                holder, binding.ssl_ctx_pointer(context),
                ffi.new("const unsigned char *[]", blobs),
                ffi.new("size_t[]", [len(d) for d in ders]), len(ders), host, 1 if is_ip else 0,
                int(at.timestamp()) if at is not None else 0, 1 if at is not None else 0):
            raise ValueError("OpenSSL could not load the chain (or allocate memory)")
        handle = holder.ptr  # valid while `holder` lives, to the end of this function
        chase_id = ffi.new("uint64_t *")
        with self._lock:
            token = self._tokens.get(context, 0)
        ok = bool(lib.aia_ext_offline_verify(handle, token, chase_id))
        interrupt = take_interrupt()
        if interrupt is not None:
            raise interrupt
        depth = ffi.new("int *")
        code = 0 if ok else int(lib.aia_ext_offline_error(handle, depth))
        chain = binding.store_chain(lib.aia_ext_offline_store_ctx(handle)) if ok else []
        del holder  # frees the handle (the chain's DER was copied out)
        return OfflineResult(ok, code, int(depth[0]), tuple(chain), int(chase_id[0]))

    # -- the C side -------------------------------------------------------

    def _module(self) -> Any:
        module = binding.bind()
        if not self._callbacks_defined:
            with self._lock:
                if not self._callbacks_defined:
                    self._define_callbacks(module.ffi, module.lib)
                    self._callbacks_defined = True
        return module

    def _x509(self, ffi: Any, lib: Any, der: bytes) -> Any | None:
        with self._parsed_lock:
            x509 = self._parsed.get(der)
            if x509 is not None:
                self._parsed.move_to_end(der)
                return x509
        holder = self._holder(ffi, lib)
        if not lib.aia_ext_x509_parse(holder, der, len(der)):
            return None
        with self._parsed_lock:
            self._parsed[der] = holder
            while len(self._parsed) > MAX_PARSED:
                self._parsed.popitem(last=False)
        return holder

    def _holder(self, ffi: Any, lib: Any) -> Any:
        """An empty ``aia_ext_holder *`` that Python owns from the start: what C puts in
        it is freed with it, even if an interrupt lands right after C fills it."""
        if self._new_holder is None:
            self._new_holder = ffi.new_allocator(lib.aia_ext_holder_alloc,
                                                 lib.aia_ext_holder_free)
        return self._new_holder("aia_ext_holder *")

    def _define_callbacks(self, ffi: Any, lib: Any) -> None:
        options_by_token = self._options

        def aia_ext_py_missing(token: int, chase_ptr: Any, ssl_ptr: Any, store_ctx: Any,
                               der: Any, der_len: int, depth: int, error: int) -> int:
            options = options_by_token.get(token)
            if options is None:
                return 0
            # Imported here, not at module level: a complete chain never gets
            # this far, and the fetch path (h11 and our parsers) is slow to import.
            from ..chase import core as chase

            state, chase_ptr[0] = chase.chase_for(chase_ptr[0], options)
            # An SSLObject's memory BIO (asyncio, anyio) or a socket (a
            # synchronous caller); offline (diagnose) there is no SSL at all.
            state.synchronous = lib.aia_ext_reads_memory(ssl_ptr) != 1

            def add(cert_der: bytes) -> int:
                holder = self._x509(ffi, lib, cert_der)  # alive through the call
                return (-1 if holder is None
                        else int(lib.aia_ext_add_untrusted(store_ctx, holder.ptr)))

            return chase.on_missing_issuer(state, bytes(ffi.buffer(der, der_len)), depth,
                                           error, add, lambda: binding.store_chain(store_ctx))

        def aia_ext_py_done(token: int, chase_id: int, ssl_ptr: Any, store_ctx: Any,
                            ok: int, error: int, depth: int) -> None:
            from ..chase import core as chase  # loaded by aia_ext_py_missing already

            # The path the last verification built: verified (what the disk
            # cache may keep), or where it stopped (diagnose() shows it).
            chase.finish(chase_id, bool(ok), error, depth, binding.store_chain(store_ctx))

        def aia_ext_py_learn(token: int, der: Any, der_len: int) -> int:
            options = options_by_token.get(token)
            if options is None or not options.learn_intermediates:
                return 0
            from ..chase import learned  # the first unseen intermediate only

            learned.learn([bytes(ffi.buffer(der, der_len))], options)
            return 1

        # Not decorators: cffi is untyped, and a plain call keeps mypy --strict quiet.
        ffi.def_extern(onerror=_callback_error)(aia_ext_py_missing)
        ffi.def_extern(onerror=_callback_error)(aia_ext_py_done)
        ffi.def_extern(onerror=_callback_error)(aia_ext_py_learn)

    def _after_fork_in_child(self) -> None:
        # Another thread may have held a lock at fork(): it would stay held.
        self._lock = HealingLock()
        self._parsed_lock = HealingLock()


#: Parsed X509 objects kept for reuse (a process meets a few dozen CAs).
MAX_PARSED = 256


_interrupts = threading.local()


def _callback_error(
    exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None
) -> None:
    # cffi then returns the declared error value (0: no certificates), so a
    # bug or an interrupt on this path fails closed (docs/design.md, invariant 4).
    if not issubclass(exc_type, Exception):
        # KeyboardInterrupt, SystemExit...: not an error of ours, and not to be
        # swallowed.  The chase stops here; the connection's do_handshake
        # raises it once OpenSSL has unwound (_ExplainingSocket below).
        _interrupts.pending = exc
        return
    log.error("aia_ext internal error in the verify callback; no certificates added",
              exc_info=(exc_type, exc, tb))


def take_interrupt() -> BaseException | None:
    """The interrupt a fetch on this thread received during the last verification."""
    exc: BaseException | None = getattr(_interrupts, "pending", None)
    _interrupts.pending = None
    return exc


def _after_handshake(conn: Any, failure: ssl.SSLCertVerificationError | None) -> None:
    """Raise an interrupt a fetch received; give a failure its chase report."""
    interrupt = take_interrupt()
    if interrupt is not None:
        if not isinstance(conn, ssl.SSLObject):
            conn.close()  # a socket: whatever OpenSSL decided, this connection is over
        raise interrupt
    if failure is not None:
        from ..records import attach  # the report records: only once a chain failed

        sslobj = getattr(conn, "_sslobj", None)
        try:
            chase_id = binding.chase_id_of(sslobj)
        except (TypeError, UnsupportedPlatformError):
            return
        attach(failure, chase_id)


def _wrap_socket_classes(context: ssl.SSLContext) -> None:
    """Make the context's socket classes explain failures, around whatever class they had
    (ssl's, truststore's, gevent's: the wrappers are mixins, so any layout combines)."""
    attributes = vars(context)
    saved = {name: attributes[name] for name in _CLASS_ATTRIBUTES if name in attributes}
    attributes["_aia_native_saved_classes"] = saved
    context.sslsocket_class = combine_classes(_ExplainingSocket, context.sslsocket_class)
    context.sslobject_class = combine_classes(_ExplainingObject, context.sslobject_class)


def _unwrap_socket_classes(context: ssl.SSLContext) -> None:
    attributes = vars(context)
    saved = attributes.pop("_aia_native_saved_classes", None)
    if saved is None:
        return
    for name in _CLASS_ATTRIBUTES:
        if name in saved:
            attributes[name] = saved[name]
        else:
            attributes.pop(name, None)


#: Where a context keeps its socket classes (assigned to the instance).
_CLASS_ATTRIBUTES = ("sslsocket_class", "sslobject_class")


class _ExplainingSocket:
    """Mixed into the socket class of a natively enabled context: interrupts surface,
    failures explain.  A mixin with no layout of its own, so that it combines with any
    socket class, gevent's included (its SSLSocket is not ssl's)."""

    __slots__ = ()

    def do_handshake(self, *args: Any, **kwargs: Any) -> None:
        try:
            super().do_handshake(*args, **kwargs)  # type: ignore[misc]
        except ssl.SSLCertVerificationError as exc:
            _after_handshake(self, exc)
            raise
        _after_handshake(self, None)


class _ExplainingObject(_ExplainingSocket):
    """The same for the SSLObjects (asyncio) of a natively enabled context."""

    __slots__ = ()


def _verified_chain(sslobj: object) -> tuple[bytes, ...]:
    getter = getattr(sslobj, "get_verified_chain", None)  # _ssl._SSLSocket, 3.10+
    if getter is None:
        return ()
    chain = getter() or []
    return tuple(c if isinstance(c, bytes) else c.public_bytes(ssl._ssl.ENCODING_DER)  # type: ignore[attr-defined]
                 for c in chain)


ENGINE = NativeEngine()

if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=ENGINE._after_fork_in_child)
