"""The fallback engine's context and sockets: client connections verified after the handshake.

The context keeps exactly the OpenSSL settings its owner gives it: a
server-side connection (a client's certificate, post-handshake
authentication) is created and verified by OpenSSL as in plain ``ssl``
(issue 20: the fallback must never turn OpenSSL's verification off for a
server).  Only while a *client* connection is created is OpenSSL's
verification set aside, for that one ``SSL`` object: ``SSL_new()`` copies
the context's verify mode, and CPython sets the peer name on the new
connection from ``check_hostname`` (``_ssl_configure_hostname``).  So the
two are switched off around ``_wrap_socket()``/``_wrap_bio()`` under a lock
and put back at once; the lock also makes readers of ``verify_mode`` and
``check_hostname`` on other threads wait for the switch to end, so nobody
ever sees the momentary value.

A client connection's served chain is verified in Python (verify.py, with
OpenSSL's own verifier) as soon as the server's Certificate message arrives,
from the TLS message callback ``_ssl`` offers (``SSLContext._msg_callback``):
inside the handshake, where OpenSSL itself verifies.  A refused chain ends a
socket's connection at once with the TLS alert OpenSSL would send, so the
client's Finished (and its certificate, under TLS 1.3) never reach the server
and the server's handshake fails as with plain ``ssl`` (issue 26, item 16).
Where no message callback exists, or for a resumed session, the chain is
verified after the handshake, before ``do_handshake()`` returns.  Either way
no application data is exchanged on an unverified connection.

``VerifyingContext`` is the base of the public ``aia_ext.SSLContext``.  With
no fallback state attached (the native engine is in force) every override
below is a pass-through to the standard behaviour.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import ssl
import struct
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from ... import binding
from ...options import Options
from ...stdlib_ssl import (
    C_BASE,
    STDLIB_CONTEXT,
    combine_classes,
    openssl_check_hostname,
    openssl_verify_mode,
    record_trust_sources,
    set_openssl_check_hostname,
    set_openssl_verification,
    set_openssl_verify_mode,
    trust_sources,
)
from ...x509_codes import UNSPECIFIED, verification_error

if TYPE_CHECKING:
    _Base = ssl.SSLContext
else:
    _Base = STDLIB_CONTEXT

log = logging.getLogger(__name__)

#: The key of the fallback state in a context's ``__dict__``.
STATE_KEY = "_aia_fallback"


class FallbackState:
    """What the fallback engine keeps on a context it verifies for."""

    __slots__ = ("lock", "options")

    def __init__(self, options: Options) -> None:
        self.options = options
        # Held while a client connection is created with OpenSSL's
        # verification set aside, and by every reader and writer of the
        # verification settings meanwhile.  Re-entrant: PyPy's _wrap_socket
        # reads check_hostname back through the property.
        self.lock = threading.RLock()


def state_of(context: object) -> FallbackState | None:
    state = getattr(context, "__dict__", {}).get(STATE_KEY)
    return state if isinstance(state, FallbackState) else None


#: Where a context keeps the security level its cipher string set.
SECLEVEL_KEY = "_aia_seclevel"
_SECLEVEL = re.compile(r"@SECLEVEL=(\d)")

#: Where a connection keeps what its verification needs and found.
SETTINGS_KEY = "_aia_verify"
CHASE_KEY, CHAIN_KEY = "_aia_chase_id", "_aia_chain"


class VerifyingContext(_Base):
    """An ``ssl.SSLContext`` whose client connections verify after the handshake when the
    fallback engine is attached; a plain context otherwise."""

    # -- the verification settings: OpenSSL's own, read and set under the lock

    @property  # type: ignore[override]
    def verify_mode(self) -> ssl.VerifyMode:
        state = state_of(self)
        if state is None:
            return openssl_verify_mode(self)
        with state.lock:
            return openssl_verify_mode(self)

    @verify_mode.setter
    def verify_mode(self, value: ssl.VerifyMode) -> None:
        state = state_of(self)
        if state is None:
            set_openssl_verify_mode(self, value)
            return
        with state.lock:
            set_openssl_verify_mode(self, value)

    @property
    def check_hostname(self) -> bool:
        state = state_of(self)
        if state is None:
            return openssl_check_hostname(self)
        with state.lock:
            return openssl_check_hostname(self)

    @check_hostname.setter
    def check_hostname(self, value: bool) -> None:
        state = state_of(self)
        if state is None:
            set_openssl_check_hostname(self, value)
            return
        with state.lock:
            set_openssl_check_hostname(self, value)

    # -- the TLS message callback: ours, with the caller's behind it

    @property
    def _msg_callback(self) -> Any:
        # As ssl.py's getter: the function the caller set, or None.
        return getattr(C_BASE._msg_callback.__get__(self), "user_function", None)

    @_msg_callback.setter
    def _msg_callback(self, callback: Any) -> None:
        # ssl.py's setter wraps the caller's function (enums for its
        # arguments); ours then goes back in front of it.
        STDLIB_CONTEXT._msg_callback.fset(self, callback)  # type: ignore[attr-defined]
        if state_of(self) is not None:
            install_tap(self)

    # -- composing with wrappers that reconfigure the context (truststore)

    @property
    def sslsocket_class(self) -> type[ssl.SSLSocket]:
        return self.__dict__.get("_aia_sslsocket_class", AIASSLSocket)  # type: ignore[no-any-return]

    @sslsocket_class.setter
    def sslsocket_class(self, cls: type[ssl.SSLSocket]) -> None:
        # truststore assigns its own class here; ours must still verify, so the
        # assigned class is combined with the verifying one, not replaced.
        self.__dict__["_aia_sslsocket_class"] = combine_classes(AIASSLSocket, cls)

    @property
    def sslobject_class(self) -> type[ssl.SSLObject]:
        return self.__dict__.get("_aia_sslobject_class", AIASSLObject)  # type: ignore[no-any-return]

    @sslobject_class.setter
    def sslobject_class(self, cls: type[ssl.SSLObject]) -> None:
        self.__dict__["_aia_sslobject_class"] = combine_classes(AIASSLObject, cls)

    # -- creating connections: the one place OpenSSL's verification is set aside

    def _wrap_socket(self, sock: Any, server_side: bool, server_hostname: Any = None, *,
                     owner: Any = None, session: Any = None) -> Any:
        return _create(self, server_side, owner, session,
                       lambda: super(VerifyingContext, self)._wrap_socket(  # type: ignore[misc]
                           sock, server_side, server_hostname, owner=owner, session=session))

    def _wrap_bio(self, incoming: Any, outgoing: Any, server_side: bool,
                  server_hostname: Any = None, *, owner: Any = None, session: Any = None) -> Any:
        return _create(self, server_side, owner, session,
                       lambda: super(VerifyingContext, self)._wrap_bio(  # type: ignore[misc]
                           incoming, outgoing, server_side, server_hostname, owner=owner,
                           session=session))

    # -- the security level, where ssl does not show it (CPython 3.9, PyPy)

    def set_ciphers(self, cipherlist: str) -> None:
        super().set_ciphers(cipherlist)
        # "@SECLEVEL=n" is how Python code sets the level before 3.10;
        # OpenSSL applies the last one given (ssl/ssl_ciph.c).
        levels = _SECLEVEL.findall(cipherlist)
        if levels:
            self.__dict__[SECLEVEL_KEY] = int(levels[-1])

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


class _Settings:
    """A client connection's verification settings, as the caller had them at its creation
    (OpenSSL copies them into the connection then), and the session it offered."""

    __slots__ = ("check_hostname", "offered", "verify_mode")

    def __init__(self, verify_mode: ssl.VerifyMode, check_hostname: bool,
                 offered: Any) -> None:
        self.verify_mode = verify_mode
        self.check_hostname = check_hostname
        self.offered = offered


def _create(context: VerifyingContext, server_side: bool, owner: Any, session: Any,
            make: Any) -> Any:
    state = state_of(context)
    if state is None or server_side:
        return make()  # a server's connection: OpenSSL verifies, exactly as in ssl
    with state.lock:
        mode, hostname = openssl_verify_mode(context), openssl_check_hostname(context)
        if owner is not None:
            owner.__dict__[SETTINGS_KEY] = _Settings(mode, hostname, session)
        if mode == ssl.CERT_NONE:
            return make()  # nothing to set aside: nobody verifies
        set_openssl_verification(context, ssl.CERT_NONE, False)
        try:
            return make()
        finally:
            set_openssl_verification(context, mode, hostname)


# ---- Verification inside the handshake, from the TLS message callback ----------

#: Where a client connection keeps the verdict reached inside its handshake:
#: ("ok", chase id, chain), ("refused", SSLCertVerificationError) or
#: ("interrupted", BaseException).
EARLY_KEY = "_aia_early"

_HANDSHAKE, _CERTIFICATE = 22, 11
_TLS1_3 = 0x0304


class _Tap:
    """The C-level message callback of a context the fallback verifies for.

    ``_ssl`` calls it for every TLS message of every connection made from
    the context; it acts on a client's received Certificate message and then
    hands every message to the caller's own callback, if one was set.
    """

    __slots__ = ("inner", "user_function")

    def __init__(self, inner: Any) -> None:
        self.inner = inner  # ssl.py's wrapper around the caller's function, or None
        self.user_function = getattr(inner, "user_function", None)

    def __call__(self, conn: Any, direction: str, version: int, content_type: int,
                 msg_type: int, data: bytes) -> None:
        if direction == "read" and content_type == _HANDSHAKE and data[:1] == b"\x0b":
            _on_certificate(conn, version, data)
        if self.inner is not None:
            self.inner(conn, direction, version, content_type, msg_type, data)


#: Whether this interpreter's _ssl has the message callback (CPython 3.8+).
HAS_TAP = hasattr(C_BASE, "_msg_callback")


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
    if isinstance(current, _Tap):
        try:
            C_BASE._msg_callback.__set__(context, current.inner)
        except TypeError:
            # PyPy's setter takes no None: the tap stays, inert (connections
            # made from now on carry no settings for it to act on).
            pass


def certificates_in_message(data: bytes, tls13: bool) -> list[bytes]:
    """The DER certificates of a TLS Certificate handshake message (with its header).

    RFC 8446 4.4.2 (a request context, then entries with extensions) and
    RFC 5246 7.4.2 (a list of certificates); each length is checked against
    what is left, so a short or inconsistent message yields what parsed.
    """
    pos, end = 4, len(data)  # after msg_type and the 3-byte length
    if tls13:
        if pos >= end:
            return []
        pos += 1 + data[pos]  # certificate_request_context
    if pos + 3 > end:
        return []
    end = min(end, pos + 3 + int.from_bytes(data[pos:pos + 3], "big"))
    pos += 3
    ders: list[bytes] = []
    while pos + 3 <= end:
        size = int.from_bytes(data[pos:pos + 3], "big")
        pos += 3
        if size == 0 or pos + size > end:
            break
        ders.append(data[pos:pos + size])
        pos += size
        if tls13:
            if pos + 2 > end:
                break
            pos += 2 + int.from_bytes(data[pos:pos + 2], "big")
    return ders


def _on_certificate(conn: Any, version: int, data: bytes) -> None:
    """Verify a client connection's served chain where OpenSSL would; never raises."""
    attributes = getattr(conn, "__dict__", None)
    if attributes is None or EARLY_KEY in attributes:
        return
    settings = attributes.get(SETTINGS_KEY)
    if not isinstance(settings, _Settings) or settings.verify_mode == ssl.CERT_NONE:
        return  # a server's connection, or nobody verifies
    try:
        served = certificates_in_message(data, version >= _TLS1_3)
        attributes[EARLY_KEY] = ("ok", *_verify_served(conn, settings, served))
    except ssl.SSLCertVerificationError as exc:
        attributes[EARLY_KEY] = ("refused", exc)
        _abort(conn, version, exc.verify_code)
    except Exception as exc:  # noqa: BLE001 - fail closed, as _verify_or_fail does
        attributes[EARLY_KEY] = ("refused", _internal_error(exc))
        _abort(conn, version, UNSPECIFIED)
    except BaseException as exc:  # noqa: BLE001 - an interrupt: re-raised by do_handshake
        attributes[EARLY_KEY] = ("interrupted", exc)
        _abort(conn, version, UNSPECIFIED)


#: The TLS alert OpenSSL sends for a verify code (ssl/statem/statem_lib.c,
#: ssl_x509err2alert); anything else is certificate_unknown (46).
_ALERTS = {
    **dict.fromkeys((2, 3, 18, 19, 20, 21, 22, 24, 25, 33, 79), 48),  # unknown_ca
    **dict.fromkeys((10, 12), 45),  # certificate_expired
    **dict.fromkeys((6, 9, 11, 13, 14, 15, 16, 27, 28, 62, 63, 64, 65, 66, 67, 68, 94),
                    42),  # bad_certificate
    23: 44,  # certificate_revoked
    **dict.fromkeys((4, 5, 7, 8), 51),  # decrypt_error
    26: 43,  # unsupported_certificate
    **dict.fromkeys((1, 17, 69, 70), 80),  # internal_error
}
_CERTIFICATE_UNKNOWN = 46


def _abort(conn: Any, version: int, code: int) -> None:
    """Refuse the server as OpenSSL's client does: a fatal alert, then the end.

    OpenSSL goes on with the handshake when the callback returns, and would
    send the client's Finished.  Instead the alert OpenSSL sends for
    ``code`` is written on the socket, unencrypted: the server has not read
    any encrypted record from this client yet, so OpenSSL accepts a plain
    alert under TLS 1.3 too (RFC 8446 section 5; OpenSSL's
    ALLOW_PLAIN_ALERTS state), and sees "alert unknown ca" as from plain
    ``ssl``.  The socket is then shut down both ways, so OpenSSL's own next
    write fails and nothing else leaves.  An SSLObject (asyncio) needs
    nothing: its owner sends its bytes only after do_handshake() succeeds.
    """
    if not isinstance(conn, ssl.SSLSocket):
        return
    record_version = min(version, 0x0303)  # TLS 1.3 records say TLS 1.2 (RFC 8446 5.1)
    alert = struct.pack("!BHHBB", 21, record_version, 2, 2,
                        _ALERTS.get(code, _CERTIFICATE_UNKNOWN))
    try:
        socket.socket.send(conn, alert)
    except OSError as exc:
        log.debug("fallback: could not send the alert to a refused server: %s", exc)
    try:
        socket.socket.shutdown(conn, socket.SHUT_RDWR)
    except OSError as exc:
        log.debug("fallback: could not shut a refused connection down: %s", exc)


def _internal_error(exc: Exception) -> ssl.SSLCertVerificationError:
    error = verification_error(
        UNSPECIFIED, f"the chain could not be verified: {type(exc).__name__}")
    error.__cause__ = exc
    return error


# ---- Sessions: a resumed handshake carries no certificates -------------------

_sessions_lock = threading.Lock()
#: Served chains of connections the fallback verified, by leaf (DER).
_verified_chains: OrderedDict[bytes, tuple[bytes, ...]] = OrderedDict()
MAX_REMEMBERED_CHAINS = 1024


def _remember_chain(served: list[bytes]) -> None:
    with _sessions_lock:
        _verified_chains[served[0]] = tuple(served)
        _verified_chains.move_to_end(served[0])
        while len(_verified_chains) > MAX_REMEMBERED_CHAINS:
            _verified_chains.popitem(last=False)


def _resumed_chain(owner: Any) -> list[bytes]:
    """The served chain of a resumed session, as the fallback verified it before.

    A resumed handshake sends no certificates, and OpenSSL did not verify
    the session's original handshake (its verification was set aside), so
    a session is usable only if the fallback verified a full handshake with
    the same server certificate, whose chain is then verified again for
    this connection's name and settings (issue 26, item 2).  The session's
    certificate is the one the server proved its key for when the session
    was made, so a session from another server cannot borrow this record.
    """
    leaf = owner.getpeercert(binary_form=True)
    if not leaf:
        return []
    with _sessions_lock:
        chain = _verified_chains.get(leaf)
    return list(chain) if chain is not None else []


# ---- Verification of a client connection ----------------------------------------

def _verify_served(owner: Any, settings: _Settings,
                   served: list[bytes]) -> tuple[int, tuple[bytes, ...]]:
    """Verify ``served`` for a client connection: (chase id, verified chain)."""
    context = owner.context
    state = state_of(context)
    if state is None:
        return 0, ()  # disabled since the connection was made: ssl's own rules
    from .verify import verify_chain  # OpenSSL's verifier: only once the fallback verifies

    hostname = owner.server_hostname if settings.check_hostname else None
    chase_id, chain = verify_chain(served, context, hostname, state.options,
                                   trust_sources(context))
    _remember_chain(served)
    return chase_id, tuple(chain)


def _verify(owner: ssl.SSLSocket | ssl.SSLObject) -> None:
    """Verify the peer of a completed client handshake in fallback mode."""
    settings = owner.__dict__.get(SETTINGS_KEY)
    if not isinstance(settings, _Settings) or settings.verify_mode == ssl.CERT_NONE:
        return  # a server's connection, the native engine, or nobody verifies
    early = owner.__dict__.get(EARLY_KEY)
    if early is not None and early[0] != "ok":
        raise early[1]
    if early is not None:
        chase_id, chain = early[1], early[2]
    elif owner.session_reused:
        served = _resumed_chain(owner)
        if not served:
            raise verification_error(
                UNSPECIFIED, "the server resumed a TLS session that aia_ext did not verify")
        chase_id, chain = _verify_served(owner, settings, served)
    else:
        chase_id, chain = _verify_served(owner, settings, binding.served_chain(owner))
    owner.__dict__[CHASE_KEY] = chase_id
    owner.__dict__[CHAIN_KEY] = chain


def _verify_or_fail(owner: ssl.SSLSocket | ssl.SSLObject) -> None:
    """``_verify``, with every failure an SSLCertVerificationError (issue 13: fail closed).

    Interrupts (KeyboardInterrupt, SystemExit) pass as they are; the caller
    closes the connection either way.
    """
    try:
        _verify(owner)
    except ssl.SSLCertVerificationError:
        raise
    except Exception as exc:
        raise _internal_error(exc) from exc


def _explain(error: ssl.SSLCertVerificationError) -> None:
    from ...records import attach  # the report records: only once a chain failed

    attach(error, getattr(error, "aia_chase_id", 0))


def _verified_chain(owner: Any, standard: Any) -> Any:
    """get_verified_chain() (3.13+): the path the fallback verified, leaf to anchor."""
    chain = owner.__dict__.get(CHAIN_KEY)
    if chain is None:
        return standard()
    return list(chain)


def _peer_dictionary(owner: Any, standard: Any) -> Any:
    """getpeercert(): ssl's dictionary for a connection the fallback verified.

    CPython decides whether to decode the certificate by the context's
    verify mode, which the fallback restores at once; PyPy 3.10+ asks the
    connection's own mode (SSL_get_verify_mode), which stays CERT_NONE, and
    so returns {} for a verified peer.  There the certificate is decoded by
    the interpreter's own decoder, so the dictionary is ssl's to the byte.
    """
    peer = standard()
    if peer != {} or CHAIN_KEY not in owner.__dict__:
        return peer
    der = owner.getpeercert(binary_form=True)
    import tempfile  # ~5 ms with shutil: kept off `import aia_ext`

    handle, path = tempfile.mkstemp(prefix="aia-ext-peer-", suffix=".pem")
    try:
        with os.fdopen(handle, "w", encoding="ascii") as f:
            f.write(ssl.DER_cert_to_PEM_cert(der))
        return ssl._ssl._test_decode_cert(path)  # type: ignore[attr-defined]
    finally:
        os.unlink(path)


class AIASSLSocket(ssl.SSLSocket):
    """SSLSocket that, in fallback mode, verifies before the handshake returns."""

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except OSError:
            # A connection refused inside the handshake fails there, on the
            # reset descriptor: the refusal is what the caller must see.
            early = self.__dict__.get(EARLY_KEY)
            if early is None or early[0] == "ok":
                raise
        try:
            _verify_or_fail(self)
        except ssl.SSLCertVerificationError as exc:
            self.close()  # nothing may travel on an unverified connection
            _explain(exc)
            raise
        except BaseException:
            self.close()
            raise

    if hasattr(ssl.SSLSocket, "get_verified_chain"):  # 3.13+
        def get_verified_chain(self) -> Any:
            return _verified_chain(self, getattr(super(), "get_verified_chain"))  # noqa: B009

    def getpeercert(self, binary_form: bool = False) -> Any:
        if binary_form:
            return super().getpeercert(True)
        return _peer_dictionary(self, super().getpeercert)


class AIASSLObject(ssl.SSLObject):
    """SSLObject (asyncio's) that, in fallback mode, verifies before the handshake returns."""

    def do_handshake(self) -> None:
        if self.__dict__.get("_aia_failed"):
            raise self.__dict__["_aia_failed"]
        try:
            super().do_handshake()
        except OSError:
            early = self.__dict__.get(EARLY_KEY)
            if early is None or early[0] == "ok":
                raise
        try:
            _verify_or_fail(self)
        except ssl.SSLCertVerificationError as exc:
            self.__dict__["_aia_failed"] = exc
            _explain(exc)
            raise
        except BaseException:
            # An interrupt: it surfaces as itself, and the object stays unusable.
            self.__dict__["_aia_failed"] = verification_error(
                UNSPECIFIED, "verification was interrupted")
            raise

    if hasattr(ssl.SSLObject, "get_verified_chain"):  # 3.13+
        def get_verified_chain(self) -> Any:
            return _verified_chain(self, getattr(super(), "get_verified_chain"))  # noqa: B009

    def getpeercert(self, binary_form: bool = False) -> Any:
        if binary_form:
            return super().getpeercert(True)
        return _peer_dictionary(self, super().getpeercert)

    def read(self, len: int = 1024, buffer: Any = None) -> Any:
        if self.__dict__.get("_aia_failed"):
            raise self.__dict__["_aia_failed"]
        return super().read(len, buffer)

    def write(self, data: Any) -> int:
        if self.__dict__.get("_aia_failed"):
            raise self.__dict__["_aia_failed"]
        return super().write(data)
