"""The fallback engine's context: where a client connection's verification is set aside.

The context keeps exactly the OpenSSL settings its owner gives it: a
server-side connection (a client's certificate, post-handshake
authentication) is created and verified by OpenSSL as in plain ``ssl``
(issue 20: the fallback must never turn OpenSSL's verification off for a
server).  Only while a *client* connection is created is OpenSSL's
verification set aside, for that one ``SSL`` object, and only together
with the verifier that then owns it (connection.py; docs/design.md,
invariant 6): ``SSL_new()`` copies the context's verify mode, and CPython
sets the peer name on the new connection from ``check_hostname``
(``_ssl_configure_hostname``).  So the two are switched off around
``_wrap_socket()``/``_wrap_bio()`` and put back at once, under the
context's lock, which every connection created from the context takes (a
server connection created in that moment would copy CERT_NONE) and which
readers of ``verify_mode`` and ``check_hostname`` on other threads take, so
nobody ever sees the momentary value.

What ``_wrap_socket()``/``_wrap_bio()`` return for such a connection is a
``VerifiedSSL`` (connection.py): ``_ssl``'s low-level connection together
with its verifier, which every wrapper (``ssl.SSLSocket``, ``ssl.SSLObject``,
truststore's, gevent's, eventlet's) calls for each handshake, read and write.
The context's socket classes are the standard ones.

The TLS message callback ``_ssl`` offers (``SSLContext._msg_callback``) is a
router here: when a server's Certificate message arrives it hands the
message to the verifier of the connection it arrived on, which verifies it
where OpenSSL would.  It owns nothing; a connection it does not reach is
verified by its own calls instead.

``VerifyingContext`` is the base of the public ``aia_ext.SSLContext``.  With
no fallback state attached (the native engine is in force, or the context
was disabled) every override below is a pass-through to the standard
behaviour.
"""

from __future__ import annotations

import os
import ssl
import sys
import threading

from ...stdlib_ssl import (
    C_BASE,
    STDLIB_CONTEXT,
    openssl_check_hostname,
    openssl_verify_mode,
    record_trust_sources,
    set_openssl_check_hostname,
    set_openssl_verification,
    set_openssl_verify_mode,
)
from .connection import (
    ConnectionVerifier,
    Settings,
    VerifiedSSL,
    verified_session,
    verified_ssl,
)
from .state import note_cipher_string, state_of
from .tls_records import is_certificate

TYPE_CHECKING = False  # typing's, without importing typing (~3 ms)
if TYPE_CHECKING:
    from typing import Any, Callable

if TYPE_CHECKING:
    _Base = ssl.SSLContext
else:
    _Base = STDLIB_CONTEXT

#: Where a context keeps its lock (made on first use; see window_lock()).
_LOCK_KEY = "_aia_window_lock"
_new_lock = threading.Lock()


def window_lock(context: object) -> threading.RLock:
    """The context's lock for creating connections and reading its verification settings.

    It lives as long as the context, whether or not an engine is enabled on
    it: a connection created while the fallback is being enabled on another
    thread must still wait for a window opened by that thread.  Re-entrant:
    PyPy's _wrap_socket reads check_hostname back through the property.
    """
    attributes = context.__dict__
    lock = attributes.get(_LOCK_KEY)
    if lock is None:
        with _new_lock:
            lock = attributes.setdefault(_LOCK_KEY, threading.RLock())
    return lock  # type: ignore[no-any-return]


#: How a class assigned to an enabled context is made one of ours (api.py's
#: ``_combined_class``: the engines sit below the API, which registers it).
_combiners: list[Callable[[type], type]] = []


def register_combiner(combine: Callable[[type], type]) -> Callable[[type], type]:
    _combiners[:] = [combine]
    return combine


class VerifyingContext(_Base):
    """An ``ssl.SSLContext`` whose client connections the fallback engine verifies when
    it is enabled there; a plain context otherwise."""

    def __setattr__(self, name: str, value: Any) -> None:
        # eventlet's create_default_context() makes the context through ssl's
        # own, which injection enables, then assigns its class to it: the
        # context would silently stop creating its connections here.  A class
        # assigned to an enabled context is combined with ours instead.
        if (name == "__class__" and _combiners and state_of(self) is not None
                and isinstance(value, type) and not issubclass(value, VerifyingContext)
                and issubclass(value, STDLIB_CONTEXT)):
            value = _combiners[0](value)
        super().__setattr__(name, value)

    # -- the verification settings: OpenSSL's own, read and set under the lock

    @property  # type: ignore[override]
    def verify_mode(self) -> ssl.VerifyMode:
        with window_lock(self):
            return openssl_verify_mode(self)

    @verify_mode.setter
    def verify_mode(self, value: ssl.VerifyMode) -> None:
        with window_lock(self):
            set_openssl_verify_mode(self, value)

    @property
    def check_hostname(self) -> bool:
        with window_lock(self):
            return openssl_check_hostname(self)

    @check_hostname.setter
    def check_hostname(self, value: bool) -> None:
        with window_lock(self):
            set_openssl_check_hostname(self, value)

    # -- the TLS message callback: ours in front of the caller's

    @property
    def _msg_callback(self) -> Any:
        # As ssl.py's getter: the function the caller set, or None.
        function = getattr(C_BASE._msg_callback.__get__(self), "user_function", None)
        # gevent's class wraps the caller's function once more (its _Callback);
        # anything else is returned as the caller set it, as ssl.py does.
        if type(function).__module__.startswith("gevent."):
            return getattr(function, "user_function", function)
        return function

    @_msg_callback.setter
    def _msg_callback(self, callback: Any) -> None:
        # ssl.py's setter wraps the caller's function (enums for its
        # arguments); the router then goes back in front of it.
        # The next class's setter: gevent's wraps the function too (and
        # rebinds ssl.SSLContext while it calls ssl.py's).  ssl.py's reaches
        # _ssl's through super(SSLContext, SSLContext), by the module's name:
        # bound to a subclass of ours (injection under gevent) that finds
        # this property again, and recursed until RecursionError.
        setter = _next_msg_callback(type(self))
        if setter is not None and (ssl.SSLContext is STDLIB_CONTEXT
                                   or setter is not vars(STDLIB_CONTEXT)["_msg_callback"]):
            setter.__set__(self, callback)
        else:
            C_BASE._msg_callback.__set__(self, _typed_callback(callback))
        if state_of(self) is not None:
            install_tap(self)

    # -- creating connections: the one place OpenSSL's verification is set aside

    def _wrap_socket(self, sock: Any, server_side: bool, server_hostname: Any = None, *,
                     owner: Any = None, session: Any = None) -> Any:
        return _create(self, server_side, server_hostname, session, False,
                       lambda offered: super(VerifyingContext, self)._wrap_socket(  # type: ignore[misc]
                           sock, server_side, server_hostname, owner=owner, session=offered))

    def _wrap_bio(self, incoming: Any, outgoing: Any, server_side: bool,
                  server_hostname: Any = None, *, owner: Any = None, session: Any = None) -> Any:
        return _create(self, server_side, server_hostname, session, True,
                       lambda offered: super(VerifyingContext, self)._wrap_bio(  # type: ignore[misc]
                           incoming, outgoing, server_side, server_hostname, owner=owner,
                           session=offered))

    # -- the security level, where ssl does not show it (CPython 3.9, PyPy)

    def set_ciphers(self, cipherlist: str) -> None:
        super().set_ciphers(cipherlist)
        note_cipher_string(self, cipherlist)

    # -- trust store bookkeeping (what get_ca_certs() cannot list)

    def load_default_certs(self, purpose: ssl.Purpose = ssl.Purpose.SERVER_AUTH) -> None:
        super().load_default_certs(purpose)
        record_trust_sources(self, default_paths=True)

    def set_default_verify_paths(self) -> None:
        super().set_default_verify_paths()
        record_trust_sources(self, default_paths=True)

    def load_verify_locations(self, cafile: Any = None, capath: Any = None,
                              cadata: Any = None) -> None:
        super().load_verify_locations(cafile, capath, cadata)
        self.record_loaded(cafile, capath, cadata)

    def record_loaded(self, cafile: Any = None, capath: Any = None, cadata: Any = None) -> None:
        """Note what a load put into this context (for one loaded before it became ours)."""
        if state_of(self) is None:
            record_trust_sources(self, capath=os.fspath(capath) if capath is not None else None)
        else:
            # Read back only under the fallback engine, which needs it; the
            # reader (bundle.py) stays out of `import aia_ext`.
            from .sources import record_loaded

            record_loaded(self, cafile, capath, cadata)


def _create(context: VerifyingContext, server_side: bool, server_hostname: Any,
            session: Any, reads_memory: bool, create_ssl: Callable[[Any], Any]) -> Any:
    """Create one connection's ``SSL``; a client's, where the fallback is enabled, with
    OpenSSL's verification set aside for it and returned inside a ``VerifiedSSL``,
    which owns its verifier (invariant 6)."""
    with window_lock(context):
        mode = openssl_verify_mode(context)
        if state_of(context) is None or server_side or mode == ssl.CERT_NONE:
            return create_ssl(session)  # OpenSSL verifies, exactly as in plain ssl
        verifier = ConnectionVerifier(Settings(
            context, mode, openssl_check_hostname(context),
            server_hostname if isinstance(server_hostname, str) else None, reads_memory))
        known = verified_session(session)
        offered, check = session, False
        if session is not None and known is None:
            # A session nobody verified is not offered, as plain ssl does not
            # offer one whose handshake failed (sessions.py).  CPython checks
            # a session when it is set (its context, the connection's side):
            # the connection is made with it once for those checks, and then
            # without it.
            offered, check = None, True
        set_openssl_verification(context, ssl.CERT_NONE, False)
        try:
            if check:
                create_ssl(session)  # raises as plain ssl would; else dropped unused
            real = create_ssl(offered)
        finally:
            set_openssl_verification(context, mode, verifier.settings.check_hostname)
        verifier.offered = known
        verifier.declined = session if check else None
        return VerifiedSSL(real, verifier)


def _next_msg_callback(cls: type) -> Any:
    """The ``_msg_callback`` property of the first class after ours in ``cls``'s MRO."""
    mro = cls.__mro__
    for klass in mro[mro.index(VerifyingContext) + 1:]:
        found = vars(klass).get("_msg_callback")
        if found is not None:
            return found
    return None


def _typed_callback(callback: Any) -> Any:
    """The caller's message callback as ssl.py's setter wraps it: the protocol version,
    content type and message type as ssl's enums where they are known values."""
    if callback is None:
        return None
    if not callable(callback):
        raise TypeError(f"{callback} is not callable.")

    def typed(conn: Any, direction: str, version: int, content_type: int,
              msg_type: int, data: bytes) -> Any:
        version = _as_enum(ssl.TLSVersion, version)
        content_type = _as_enum(ssl._TLSContentType, content_type)  # type: ignore[attr-defined]
        if content_type == ssl._TLSContentType.HEADER:  # type: ignore[attr-defined]
            kinds: Any = ssl._TLSContentType  # type: ignore[attr-defined]
        elif content_type == ssl._TLSContentType.ALERT:  # type: ignore[attr-defined]
            kinds = ssl._TLSAlertType  # type: ignore[attr-defined]
        else:
            kinds = ssl._TLSMessageType  # type: ignore[attr-defined]
        return callback(conn, direction, version, content_type, _as_enum(kinds, msg_type), data)

    typed.user_function = callback  # type: ignore[attr-defined]  # what the getter reads
    return typed


def _as_enum(kind: Any, value: int) -> Any:
    try:
        return kind(value)
    except ValueError:
        return value


# ---- The message callback: a router to each connection's verifier -------------

class _Tap:
    """The C-level message callback of a context the fallback verifies for.

    ``_ssl`` calls it for every TLS message of every connection whose
    current context it is; it hands a server's Certificate message to the
    connection's verifier, if it has one, and then every message to the
    caller's own callback, if one was set.
    """

    __slots__ = ("inner", "user_function")

    def __init__(self, inner: Any) -> None:
        self.inner = inner  # ssl.py's wrapper around the caller's function, or None
        self.user_function = getattr(inner, "user_function", None)

    def __call__(self, conn: Any, direction: str, version: int, content_type: int,
                 msg_type: int, data: bytes) -> None:
        if direction == "read" and is_certificate(content_type, data):
            sslobj = verified_ssl(conn)
            if sslobj is not None:
                sslobj.verifier.on_certificate_message(sslobj, version, data)
        if self.inner is not None:
            self.inner(conn, direction, version, content_type, msg_type, data)


#: CPython before 3.9.3 (Debian 11's 3.9.2), bpo-43577: a connection keeps
#: calling _ssl's message callback after its context was swapped
#: (SSL_set_SSL_CTX() does not copy it) or its callback removed, and that
#: callback returns without releasing the GIL when the context now has none:
#: the process deadlocks.  There the router is never installed, and every
#: chain is verified when the handshake returns (connection.py), as where a
#: swap leaves a connection without it.
STALE_CALLBACK = sys.implementation.name == "cpython" and sys.version_info < (3, 9, 3)
#: Whether the router is used: this interpreter's _ssl has the message callback
#: (CPython 3.8+, PyPy) and calling it cannot deadlock.
HAS_TAP = hasattr(C_BASE, "_msg_callback") and not STALE_CALLBACK
#: Whether removing the callback races with a handshake on another thread.
_NONE_RACES = sys.implementation.name == "pypy"


def install_tap(context: object) -> None:
    if not HAS_TAP:
        return
    current = C_BASE._msg_callback.__get__(context)
    if not isinstance(current, _Tap):
        C_BASE._msg_callback.__set__(context, _Tap(current))


def remove_tap(context: object) -> None:
    if not HAS_TAP:
        return
    current = C_BASE._msg_callback.__get__(context)
    if not isinstance(current, _Tap):
        return
    if current.inner is None and _NONE_RACES:
        # PyPy's _ssl checks the context's callback for None and then calls it
        # again, in Python: set to None from another thread in between, a
        # handshake under way calls None (and its setter raises TypeError after
        # taking None).  The router stays; it reaches only connections that have
        # verifiers, and passes everything else to nobody.
        return
    C_BASE._msg_callback.__set__(context, current.inner)
