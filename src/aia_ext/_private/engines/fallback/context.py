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

The sockets and objects created for a client verify the served chain in
Python (verify.py, with OpenSSL's own verifier) before ``do_handshake()``
returns, and close the connection on failure: no application data is
exchanged on an unverified connection.

``VerifyingContext`` is the base of the public ``aia_ext.SSLContext``.  With
no fallback state attached (the native engine is in force) every override
below is a pass-through to the standard behaviour.
"""

from __future__ import annotations

import os
import ssl
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from ... import binding
from ...options import Options
from ...stdlib_ssl import (
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

def _verify(owner: ssl.SSLSocket | ssl.SSLObject) -> None:
    """Verify the peer of a completed client handshake in fallback mode."""
    settings = owner.__dict__.get(SETTINGS_KEY)
    if not isinstance(settings, _Settings) or settings.verify_mode == ssl.CERT_NONE:
        return  # a server's connection, the native engine, or nobody verifies
    context = owner.context
    state = state_of(context)
    if state is None:
        return
    from .verify import verify_chain  # OpenSSL's verifier: only once the fallback verifies

    resumed = bool(owner.session_reused)
    served = _resumed_chain(owner) if resumed else binding.served_chain(owner)
    if resumed and not served:
        raise verification_error(
            UNSPECIFIED, "the server resumed a TLS session that aia_ext did not verify")
    hostname = owner.server_hostname if settings.check_hostname else None
    chase_id, chain = verify_chain(served, context, hostname, state.options,
                                   trust_sources(context))
    if not resumed:
        _remember_chain(served)
    owner.__dict__[CHASE_KEY] = chase_id
    owner.__dict__[CHAIN_KEY] = tuple(chain)


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
        raise verification_error(
            UNSPECIFIED, f"the chain could not be verified: {type(exc).__name__}") from exc


def _explain(error: ssl.SSLCertVerificationError) -> None:
    from ...records import attach  # the report records: only once a chain failed

    attach(error, getattr(error, "aia_chase_id", 0))


def _verified_chain(owner: Any, standard: Any) -> Any:
    """get_verified_chain() (3.13+): the path the fallback verified, leaf to anchor."""
    chain = owner.__dict__.get(CHAIN_KEY)
    if chain is None:
        return standard()
    return list(chain)


class AIASSLSocket(ssl.SSLSocket):
    """SSLSocket that, in fallback mode, verifies before the handshake returns."""

    def do_handshake(self, block: bool = False) -> None:
        super().do_handshake(block)
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


class AIASSLObject(ssl.SSLObject):
    """SSLObject (asyncio's) that, in fallback mode, verifies before the handshake returns."""

    def do_handshake(self) -> None:
        if self.__dict__.get("_aia_failed"):
            raise self.__dict__["_aia_failed"]
        super().do_handshake()
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

    def read(self, len: int = 1024, buffer: Any = None) -> Any:
        if self.__dict__.get("_aia_failed"):
            raise self.__dict__["_aia_failed"]
        return super().read(len, buffer)

    def write(self, data: Any) -> int:
        if self.__dict__.get("_aia_failed"):
            raise self.__dict__["_aia_failed"]
        return super().write(data)
