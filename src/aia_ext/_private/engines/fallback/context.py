"""The fallback engine's context and sockets: verification after the handshake.

OpenSSL's verification is switched off underneath, while the context keeps
showing and enforcing the ``verify_mode`` and ``check_hostname`` the caller
set; the sockets and objects it creates verify the served chain in Python
(verify.py) before ``do_handshake()`` returns, and close the connection on
failure.  No application data is exchanged on an unverified connection.

``VerifyingContext`` is the base of the public ``aia_ext.SSLContext``.  With
no fallback state attached (the native engine is in force) every override
below is a pass-through to the standard behaviour.
"""

from __future__ import annotations

import os
import ssl
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

    __slots__ = ("check_hostname", "options", "verify_mode")

    def __init__(self, options: Options, verify_mode: ssl.VerifyMode,
                 check_hostname: bool) -> None:
        self.options = options
        self.verify_mode = verify_mode  # as the caller set it (OpenSSL's own is CERT_NONE)
        self.check_hostname = check_hostname


def state_of(context: object) -> FallbackState | None:
    state = getattr(context, "__dict__", {}).get(STATE_KEY)
    return state if isinstance(state, FallbackState) else None


def set_openssl_level(context: object, verify_mode: ssl.VerifyMode, check_hostname: bool) -> None:
    """Set what OpenSSL itself enforces, leaving the caller-facing values alone.

    PyPy's C-base setters read ``self.check_hostname`` back, which our property
    answers from the state; the state is set aside meanwhile so that they see
    OpenSSL's own value.
    """
    attributes = context.__dict__
    state = attributes.pop(STATE_KEY, None)
    try:
        set_openssl_verification(context, verify_mode, check_hostname)
    finally:
        if state is not None:
            attributes[STATE_KEY] = state


#: Where a verified connection keeps its chase id and verified chain.
CHASE_KEY, CHAIN_KEY = "_aia_chase_id", "_aia_chain"


class VerifyingContext(_Base):
    """An ``ssl.SSLContext`` whose sockets verify after the handshake when the fallback
    engine is attached; a plain context otherwise."""

    # -- what the caller sees and sets, kept apart from OpenSSL's in fallback mode

    @property  # type: ignore[override]
    def verify_mode(self) -> ssl.VerifyMode:
        state = state_of(self)
        return state.verify_mode if state else openssl_verify_mode(self)

    @verify_mode.setter
    def verify_mode(self, value: ssl.VerifyMode) -> None:
        state = state_of(self)
        if state is None:
            set_openssl_verify_mode(self, value)
            return
        mode = ssl.VerifyMode(value)
        if mode == ssl.CERT_NONE and state.check_hostname:
            raise ValueError("Cannot set verify_mode to CERT_NONE when check_hostname is enabled.")
        state.verify_mode = mode

    @property
    def check_hostname(self) -> bool:
        state = state_of(self)
        return state.check_hostname if state else openssl_check_hostname(self)

    @check_hostname.setter
    def check_hostname(self, value: bool) -> None:
        state = state_of(self)
        if state is None:
            set_openssl_check_hostname(self, value)
            return
        state.check_hostname = bool(value)
        if state.check_hostname and state.verify_mode == ssl.CERT_NONE:
            state.verify_mode = ssl.CERT_REQUIRED  # as ssl.SSLContext does

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

    def wrap_socket(self, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        _take_over_openssl_settings(self)
        return super().wrap_socket(*args, **kwargs)

    def wrap_bio(self, *args: Any, **kwargs: Any) -> ssl.SSLObject:
        _take_over_openssl_settings(self)
        return super().wrap_bio(*args, **kwargs)

    # -- trust store bookkeeping (a capath is read lazily by OpenSSL)

    def load_default_certs(self, purpose: ssl.Purpose = ssl.Purpose.SERVER_AUTH) -> None:
        super().load_default_certs(purpose)
        record_trust_sources(self, default_paths=True)

    def set_default_verify_paths(self) -> None:
        super().set_default_verify_paths()
        record_trust_sources(self, default_paths=True)

    def load_verify_locations(self, cafile: Any = None, capath: Any = None,
                              cadata: Any = None) -> None:
        super().load_verify_locations(cafile, capath, cadata)
        if capath is not None:
            record_trust_sources(self, capath=os.fspath(capath))


def _take_over_openssl_settings(context: ssl.SSLContext) -> None:
    """Before a connection: OpenSSL's own verification must stay off in fallback mode.

    A wrapper may have set it through the C base's descriptors (truststore's
    verify_mode setter does), which bypasses our properties; what it set is
    what the caller wants enforced, so it moves into the state.
    """
    state = state_of(context)
    if state is None:
        return
    mode, hostname = openssl_verify_mode(context), openssl_check_hostname(context)
    if mode != ssl.CERT_NONE or hostname:
        state.verify_mode, state.check_hostname = mode, hostname
        set_openssl_level(context, ssl.CERT_NONE, False)


def _verify(owner: ssl.SSLSocket | ssl.SSLObject) -> None:
    """Verify the peer of a completed client handshake in fallback mode."""
    context = owner.context
    state = state_of(context)
    if state is None or owner.server_side or state.verify_mode == ssl.CERT_NONE:
        return  # the native engine verified inside the handshake, or nobody verifies
    from .verify import verify_chain  # cryptography: only once the fallback verifies
    served = binding.served_chain(owner)
    hostname = owner.server_hostname if state.check_hostname else None
    default_paths, capaths = trust_sources(context)
    chase_id, chain = verify_chain(served, context, hostname, state.options,
                                   default_paths, capaths)
    owner.__dict__[CHASE_KEY] = chase_id
    owner.__dict__[CHAIN_KEY] = tuple(chain)


def _verify_or_fail(owner: ssl.SSLSocket | ssl.SSLObject) -> None:
    """``_verify``, with every failure an SSLCertVerificationError (issue 13: fail closed).

    A verifier may raise something else for input it cannot handle (cryptography
    raises ValueError for some names): that is a failed verification too, with
    the original chained.  Interrupts (KeyboardInterrupt, SystemExit) pass as
    they are; the caller closes the connection either way.
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


def _peercert(owner: Any, binary_form: bool) -> Any:
    """getpeercert() for a connection the fallback verified.

    With OpenSSL's verification off underneath, _ssl returns {} for the
    decoded form; clients such as urllib3 1.26 (pip's) read it to match the
    hostname themselves, so the verified leaf is decoded here instead.
    """
    chain = owner.__dict__.get(CHAIN_KEY)
    if binary_form or not chain:
        return None
    from .peercert import decode  # cryptography: imported on first use

    return decode(chain[0])


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

    def getpeercert(self, binary_form: bool = False) -> Any:
        return _peercert(self, binary_form) or super().getpeercert(binary_form)


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

    def getpeercert(self, binary_form: bool = False) -> Any:
        return _peercert(self, binary_form) or super().getpeercert(binary_form)

    def read(self, len: int = 1024, buffer: Any = None) -> Any:
        if self.__dict__.get("_aia_failed"):
            raise self.__dict__["_aia_failed"]
        return super().read(len, buffer)

    def write(self, data: Any) -> int:
        if self.__dict__.get("_aia_failed"):
            raise self.__dict__["_aia_failed"]
        return super().write(data)


