"""``aia_ext.SSLContext``: an ``ssl.SSLContext`` that chases AIA on every platform.

Where the native engine binds, the context is simply ``enable()``d.
Elsewhere (or with ``AIA_EXT_ENGINE=fallback``) it runs the fallback engine:
OpenSSL's verification is switched off underneath, while the context keeps
showing and enforcing the ``verify_mode`` and ``check_hostname`` the caller
set; the sockets and objects it creates verify the served chain in Python
(fallback.py) before ``do_handshake()`` returns, and close the connection on
failure.  No application data is exchanged on an unverified connection.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import native
from .context import stdlib_context_class
from .options import Options, make_options

__all__ = ["SSLContext", "adopt", "drop_fallback", "set_options"]

# The standard library's class, even if ssl.SSLContext names truststore's now.
_STDLIB = stdlib_context_class()
# Its C base (_ssl._SSLContext; PyPy's _cffi_ssl one) holds OpenSSL's own
# verify_mode and check_hostname.  Those descriptors are used directly: ssl.py's
# property setters look up the name ssl.SSLContext, and recurse forever once
# truststore has rebound it to a subclass.
_CBASE = _STDLIB.__mro__[1]


def _openssl_verify_mode(context: object) -> ssl.VerifyMode:
    return ssl.VerifyMode(_CBASE.verify_mode.__get__(context))  # type: ignore[attr-defined]


def _openssl_check_hostname(context: object) -> bool:
    return bool(_CBASE.check_hostname.__get__(context))  # type: ignore[attr-defined]


def _set_openssl(context: object, verify_mode: ssl.VerifyMode, check_hostname: bool) -> None:
    # Order matters, as in ssl: hostname checks need verification on.
    if check_hostname:
        _CBASE.verify_mode.__set__(context, verify_mode)  # type: ignore[attr-defined]
        _CBASE.check_hostname.__set__(context, True)  # type: ignore[attr-defined]
    else:
        _CBASE.check_hostname.__set__(context, False)  # type: ignore[attr-defined]
        _CBASE.verify_mode.__set__(context, verify_mode)  # type: ignore[attr-defined]
if TYPE_CHECKING:
    _Base = ssl.SSLContext
else:
    _Base = _STDLIB


@dataclass
class _FallbackState:
    options: Options
    verify_mode: ssl.VerifyMode
    check_hostname: bool
    default_paths: bool = False
    capaths: list[str] = field(default_factory=list)


def _fallback(context: object) -> _FallbackState | None:
    state = getattr(context, "__dict__", {}).get("_aia_fallback")
    return state if isinstance(state, _FallbackState) else None


class SSLContext(_Base):
    """An ``ssl.SSLContext`` with AIA chasing, whichever engine this interpreter allows."""

    def __new__(cls, protocol: Any = None, *args: Any, **kwargs: Any) -> SSLContext:
        context = super().__new__(cls, protocol, *args, **kwargs)
        _setup(context, Options())
        return context

    # -- what the caller sees and sets, kept apart from OpenSSL's in fallback mode

    @property  # type: ignore[override]
    def verify_mode(self) -> ssl.VerifyMode:
        state = _fallback(self)
        return state.verify_mode if state else _openssl_verify_mode(self)

    @verify_mode.setter
    def verify_mode(self, value: ssl.VerifyMode) -> None:
        state = _fallback(self)
        if state is None:
            _CBASE.verify_mode.__set__(self, value)  # type: ignore[attr-defined]
            return
        mode = ssl.VerifyMode(value)
        if mode == ssl.CERT_NONE and state.check_hostname:
            raise ValueError("Cannot set verify_mode to CERT_NONE when check_hostname is enabled.")
        state.verify_mode = mode

    @property
    def check_hostname(self) -> bool:
        state = _fallback(self)
        return state.check_hostname if state else _openssl_check_hostname(self)

    @check_hostname.setter
    def check_hostname(self, value: bool) -> None:
        state = _fallback(self)
        if state is None:
            _CBASE.check_hostname.__set__(self, value)  # type: ignore[attr-defined]
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
        self.__dict__["_aia_sslsocket_class"] = _combine(AIASSLSocket, cls)

    @property
    def sslobject_class(self) -> type[ssl.SSLObject]:
        return self.__dict__.get("_aia_sslobject_class", AIASSLObject)  # type: ignore[no-any-return]

    @sslobject_class.setter
    def sslobject_class(self, cls: type[ssl.SSLObject]) -> None:
        self.__dict__["_aia_sslobject_class"] = _combine(AIASSLObject, cls)

    def wrap_socket(self, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        _take_over_openssl_settings(self)
        return super().wrap_socket(*args, **kwargs)

    def wrap_bio(self, *args: Any, **kwargs: Any) -> ssl.SSLObject:
        _take_over_openssl_settings(self)
        return super().wrap_bio(*args, **kwargs)

    # -- trust store bookkeeping (a capath is read lazily by OpenSSL)

    def load_default_certs(self, purpose: ssl.Purpose = ssl.Purpose.SERVER_AUTH) -> None:
        super().load_default_certs(purpose)
        state = _fallback(self)
        if state:
            state.default_paths = True

    def set_default_verify_paths(self) -> None:
        super().set_default_verify_paths()
        state = _fallback(self)
        if state:
            state.default_paths = True

    def load_verify_locations(self, cafile: Any = None, capath: Any = None,
                              cadata: Any = None) -> None:
        super().load_verify_locations(cafile, capath, cadata)
        state = _fallback(self)
        if state and capath is not None:
            state.capaths.append(os.fspath(capath))


def _combine(ours: type, theirs: type) -> type:
    """A class doing both: ``ours`` (verification) around ``theirs``."""
    if issubclass(theirs, ours):
        return theirs
    return type(f"AIA{theirs.__name__}", (ours, theirs), {})


def _take_over_openssl_settings(context: ssl.SSLContext) -> None:
    """Before a connection: OpenSSL's own verification must stay off in fallback mode.

    A wrapper may have set it through the C base's descriptors (truststore's
    verify_mode setter does), which bypasses our properties; what it set is
    what the caller wants enforced, so it moves into the state.
    """
    state = _fallback(context)
    if state is None:
        return
    mode, hostname = _openssl_verify_mode(context), _openssl_check_hostname(context)
    if mode != ssl.CERT_NONE or hostname:
        state.verify_mode, state.check_hostname = mode, hostname
        _set_openssl(context, ssl.CERT_NONE, False)


def _setup(context: ssl.SSLContext, options: Options, default_paths: bool = False,
           capaths: tuple[str, ...] = ()) -> None:
    """Give ``context`` (an aia_ext.SSLContext) its engine."""
    from .context import enable

    if native.engine() == "native":
        enable(context, **options._asdict())
        return
    state = _FallbackState(options, _openssl_verify_mode(context),
                           _openssl_check_hostname(context), default_paths, list(capaths))
    # OpenSSL must not verify (it would fail on the incomplete chain); the
    # caller-facing values live in the state and are enforced after the handshake.
    _set_openssl(context, ssl.CERT_NONE, False)
    context.__dict__["_aia_fallback"] = state


def adopt(context: ssl.SSLContext, options: dict[str, Any], default_paths: bool,
          capaths: tuple[str, ...] = ()) -> SSLContext:
    """Turn a freshly made standard context into an aia_ext.SSLContext, in place.

    The layouts are identical (no new slots), so every default the standard
    library chose for this Python version is kept exactly.  ``default_paths``
    and ``capaths`` say what was loaded before the switch.
    """
    opts = make_options(options)
    context.__class__ = SSLContext
    context.__dict__.pop("_aia_fallback", None)
    _setup(context, opts, default_paths, capaths)
    return context  # type: ignore[return-value]


def drop_fallback(context: ssl.SSLContext) -> bool:
    """Put OpenSSL's verification back as the caller set it; False if not in fallback."""
    state = _fallback(context)
    if state is None:
        return False
    del context.__dict__["_aia_fallback"]
    _set_openssl(context, state.verify_mode, state.check_hostname)
    return True


def set_options(context: ssl.SSLContext, options: dict[str, Any]) -> bool:
    """Replace a fallback context's options; False if it is not in fallback mode."""
    state = _fallback(context)
    if state is None:
        return False
    state.options = make_options(options)
    return True


def _verify(owner: ssl.SSLSocket | ssl.SSLObject) -> None:
    """Verify the peer of a completed client handshake in fallback mode."""
    from . import fallback

    context = owner.context
    state = _fallback(context)
    if state is None or owner.server_side or state.verify_mode == ssl.CERT_NONE:
        return
    served = native.served_chain(owner)
    hostname = owner.server_hostname if state.check_hostname else None
    session_id, chain = fallback.verify_chain(served, context, hostname, state.options,
                                              state.default_paths, tuple(state.capaths))
    owner.__dict__["_aia_session"] = session_id
    owner.__dict__["_aia_chain"] = tuple(chain)


def _peercert(owner: Any, binary_form: bool) -> Any:
    """getpeercert() for a connection the fallback verified.

    With OpenSSL's verification off underneath, _ssl returns {} for the
    decoded form; clients such as urllib3 1.26 (pip's) read it to match the
    hostname themselves, so the verified leaf is decoded here instead.
    """
    chain = owner.__dict__.get("_aia_chain")
    if binary_form or not chain:
        return None
    from .peercert import decode

    return decode(chain[0])


class AIASSLSocket(ssl.SSLSocket):
    """SSLSocket that, in fallback mode, verifies before the handshake returns."""

    def do_handshake(self, block: bool = False) -> None:
        super().do_handshake(block)
        try:
            _verify(self)
        except ssl.SSLCertVerificationError:
            self.close()  # nothing may travel on an unverified connection
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
            _verify(self)
        except ssl.SSLCertVerificationError as exc:
            self.__dict__["_aia_failed"] = exc
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


