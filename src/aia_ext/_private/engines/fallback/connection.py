"""A client connection's verification under the fallback engine: owned by the connection.

The fallback engine sets OpenSSL's verification aside for each client
connection it creates (context.py), and only together with a
``ConnectionVerifier`` that the connection owns: *set aside if and only if it
has a verifier* (docs/design.md, invariant 6).  What ``_wrap_socket()`` and
``_wrap_bio()`` then return in place of ``_ssl``'s low-level connection is a
``VerifiedSSL``, which holds both and asks the verifier at every call that
can complete a handshake or move application data (``do_handshake``,
``read``, ``write``).  Every wrapper reaches the connection through that
object (``ssl.SSLSocket``, ``ssl.SSLObject`` and so asyncio, truststore's,
gevent's and eventlet's sockets, or a caller of ``_wrap_socket`` itself), so
none can get around it, whatever its class, in the manner of trio's
``_check_status()`` at every entry point.

The verifier holds what OpenSSL copied into the connection at ``SSL_new()``
(verify mode, verify flags, host flags, the peer name CPython set from
``check_hostname``, the security level) and never asks a context whether to
verify.  What OpenSSL reads from the connection's *current* context when it
verifies (``s->ctx``: the trust store, the security level after a context
swap, and whether aia_ext completes chains there) is read from the
connection's context at that moment, as OpenSSL does, so a swapped context
or a disabled engine changes what a chain is verified against, never
whether.

Every state but "verified for the handshake now in effect" refuses:

- before a read or a write, a handshake nobody verified yet is driven and
  verified first (OpenSSL would otherwise complete it inside ``SSL_read`` or
  ``SSL_write`` and send application data on it: bpo-30141, trio's
  ``_ssl.py``);
- after every read, the handshake now in effect (its ``tls-unique`` value,
  RFC 5929) is compared with the one verified, and a new one (a TLS 1.2
  renegotiation the server started) is verified before the read returns its
  data;
- before a write on a TLS 1.2 connection, a renegotiation under way is
  finished without application data (``SSL_do_handshake``) and verified.

The TLS message callback (context.py) routes the server's Certificate
message to the connection's verifier where it can, so that a refused chain
ends the connection inside the handshake, before the client's Finished
leaves.  Where nothing routes (a swapped context, a disabled engine, a
replaced callback, a wrapper that hands ``_ssl`` another owner), the calls
above verify; nothing is accepted by default.

After a refusal the connection behaves as one whose handshake failed in
plain ``ssl``: the first call raises the ``SSLCertVerificationError``, later
ones fail as OpenSSL fails them (EOF), ``getpeercert()`` says the handshake
is not done, and nothing travels.
"""

from __future__ import annotations

import functools
import os
import ssl
import sys
import threading

from ... import binding
from ... import x509_codes as codes
from ...logtext import get_logger
from ...stdlib_ssl import C_BASE
from . import sessions
from .failures import failed_call_error, ssl_style_error
from .state import options_for, security_level
from .tls_records import TLS1_3, certificates_in_message, send_alert, shut

TYPE_CHECKING = False  # typing's, without importing typing (~3 ms)
if TYPE_CHECKING:
    from typing import Any, Callable

if TYPE_CHECKING:
    from .verify import Request

log = get_logger(__name__)

#: Where a connection keeps its verifier (the one key on a connection).
_VERIFIER_KEY = "_aia_verifier"

#: What a call on a connection whose handshake failed raises, as the interpreter's
#: _ssl does: PyPy's raises the verification error again, CPython's an EOF.
_FAILED_CALLS_REPEAT = sys.implementation.name == "pypy"

#: Protocol versions in which a server may start a new handshake (renegotiation).
_RENEGOTIABLE = frozenset({"SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2"})


class Settings:
    """What ``SSL_new()`` copied into a client connection from the context that created it.

    OpenSSL keeps these in the ``SSL`` itself (its verify mode and
    X509_VERIFY_PARAM, the peer name CPython sets from ``check_hostname`` in
    ``_ssl_configure_hostname``, the security level in its ``CERT``), so
    changing the context afterwards does not change them; a context swap
    (``SSL_set_SSL_CTX``) replaces only the security level.
    """

    __slots__ = ("check_hostname", "context", "host_flags", "hostname", "reads_memory",
                 "security_level", "verify_flags", "verify_mode")

    def __init__(self, context: ssl.SSLContext, verify_mode: ssl.VerifyMode,
                 check_hostname: bool, hostname: str | None, reads_memory: bool) -> None:
        self.context = context  # the creating context, which the level came from
        self.reads_memory = reads_memory  # an SSLObject's memory BIO, not a socket
        self.verify_mode = verify_mode
        self.check_hostname = check_hostname
        self.hostname = hostname
        self.verify_flags = int(C_BASE.verify_flags.__get__(context))
        # X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS where the interpreter keeps no copy.
        self.host_flags = int(getattr(context, "_host_flags", 0x4))
        self.security_level = security_level(context)


class _Refusal:
    """Why a connection was refused, and what its next call raises."""

    __slots__ = ("error", "interrupt", "reported")

    def __init__(self, error: ssl.SSLCertVerificationError,
                 interrupt: BaseException | None = None) -> None:
        self.error = error
        self.interrupt = interrupt  # a KeyboardInterrupt or the like, raised once, first
        self.reported = False


class ConnectionVerifier:
    """The verification of one client connection whose OpenSSL verification was set aside."""

    __slots__ = ("_accounted", "_identity", "_lock", "_refusal", "_renegotiable", "_tap_ok",
                 "_tap_served", "chain", "chase_id", "declined", "offered", "settings")

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # Re-entrant: check() may drive a handshake whose Certificate message
        # reaches on_certificate_message() on the same thread.
        self._lock = threading.RLock()
        self._refusal: _Refusal | None = None
        self._accounted = False  # the first handshake has been verified
        self._identity: bytes | None = None  # tls-unique of the handshake verified last
        self._renegotiable = False  # TLS 1.2 or older: the server may start another
        self._tap_ok = False  # the tap verified the first handshake's chain
        self._tap_served: list[bytes] = []  # the last Certificate message's certificates
        self.chase_id = 0  # of the handshake verified last (0: nothing was chased)
        self.chain: tuple[bytes, ...] = ()  # the path verified last (DER, leaf first)
        #: The verified session this connection offers, if any (the only one a
        #: server can resume for it).
        self.offered: sessions.VerifiedSession | None = None
        #: A session the caller set that was not offered (nobody verified it):
        #: what ``session`` reads back before the handshake, as in plain ssl.
        self.declined: Any = None

    # -- queries

    @property
    def refused(self) -> bool:
        return self._refusal is not None

    @property
    def verified(self) -> bool:
        """Whether the handshake verified last is in effect and nothing was refused."""
        return self._accounted and self._refusal is None

    @property
    def handshake_pending(self) -> bool:
        return not self._accounted

    @property
    def renegotiable(self) -> bool:
        return self._renegotiable

    # -- events

    def on_certificate_message(self, conn: Any, version: int, data: bytes) -> None:
        """The server's Certificate message, from the tap, where OpenSSL verifies.

        Never raises (it runs inside OpenSSL's handshake): a refusal is kept
        and raised by the connection's next call, and the connection's
        traffic ends now.
        """
        with self._lock:
            if self._refusal is not None:
                return
            first = not self._accounted
            served = certificates_in_message(data, version >= TLS1_3)
            self._tap_served = served
            code = self._guarded(conn, served)
            if code is None:
                self._tap_ok = self._tap_ok or first
                return
        if first:
            send_alert(conn, version, code)  # as OpenSSL would (tls_records.py)
        shut(conn)

    def check(self, conn: Any) -> None:
        """After a call that may have completed a handshake: raise unless the handshake now
        in effect was verified (verifying it first when nobody has)."""
        with self._lock:
            if self._refusal is None:
                if not self._accounted:
                    self._account_first(conn)
                elif self._renegotiable:
                    identity = _identity(conn)
                    # No tls-unique value (an interpreter without it): nothing
                    # tells a renegotiation apart, so the chain now in effect is
                    # verified after every call (the verdict cache answers).
                    if identity is None or identity != self._identity:
                        self._account_renegotiation(conn, identity)
            if self._refusal is not None:
                self._raise(conn)

    def raise_if_refused(self, conn: Any) -> None:
        """Before a call: a refused connection fails, as a plain one whose handshake failed."""
        if self._refusal is not None:
            with self._lock:
                self._raise(conn)

    # -- verification

    def _account_first(self, conn: Any) -> None:
        if self._tap_ok:
            pass  # verified inside the handshake
        elif conn.session_reused:
            self._resumed(conn)
        else:
            self._verify_now(conn, self._served(conn))
        if self._refusal is None:
            self._identity = _identity(conn)
            self._renegotiable = conn.version() in _RENEGOTIABLE
            self._accounted = True

    def _account_renegotiation(self, conn: Any, identity: bytes | None) -> None:
        # A resumed renegotiation resumes this connection's own session: the
        # server sends no certificate and OpenSSL verifies nothing, as in
        # plain ssl.  Otherwise the server's new chain is verified now (the
        # tap may have verified it already; the verdict cache answers then).
        if not conn.session_reused:
            self._verify_now(conn, self._served(conn))
        if self._refusal is None:
            self._identity = identity

    def _served(self, conn: VerifiedSSL) -> list[bytes]:
        """The chain the server presented in the handshake now in effect."""
        served = binding.served_chain(conn._aia_real)
        tapped = self._tap_served
        # Where the interpreter shows only the leaf (3.9 without a reachable
        # OpenSSL), the certificates the tap saw for the same leaf are whole.
        if tapped and served and tapped[0] == served[0] and len(tapped) > len(served):
            return list(tapped)
        return served

    def _resumed(self, conn: Any) -> None:
        verified = sessions.recall(sessions.session_id(conn.session))
        if verified is None:
            # A client resumes only the session it offered (RFC 5246 7.4.1.2,
            # RFC 8446 4.6.1), and that one was verified; but the resumed copy
            # may carry another id (OpenSSL 1.1.1, after a renegotiation).
            verified = self.offered
        if verified is None:
            self._refuse(conn, ssl_style_error(
                codes.UNSPECIFIED, self._hostname(),
                "the server resumed a TLS session that aia_ext did not verify"))
            return
        self.chase_id, self.chain = 0, verified.chain

    def _verify_now(self, conn: Any, served: list[bytes]) -> None:
        code = self._guarded(conn, served)
        if code is not None:
            shut(conn)

    def _guarded(self, conn: Any, served: list[bytes]) -> int | None:
        """Verify ``served``; on refusal keep it and return its code (None: verified).

        Every failure is a refusal (invariant 4): an exception is an internal
        error, an interrupt is kept to be raised first.
        """
        try:
            self.chase_id, chain = _verify_served(conn, self.settings, served)
        except ssl.SSLCertVerificationError as exc:
            self._refuse(conn, exc)
            return int(exc.verify_code)
        except Exception as exc:  # noqa: BLE001 - fail closed (invariant 4)
            error = ssl_style_error(codes.UNSPECIFIED, self._hostname(),
                                    f"the chain could not be verified: {type(exc).__name__}")
            error.__cause__ = exc
            self._refuse(conn, error)
            return codes.UNSPECIFIED
        except BaseException as exc:  # noqa: BLE001 - an interrupt: raised by the next call
            self._refuse(conn, ssl_style_error(codes.UNSPECIFIED, self._hostname(),
                                               "verification was interrupted"), exc)
            return codes.UNSPECIFIED
        self.chain = tuple(chain)
        return None

    def _refuse(self, conn: Any, error: ssl.SSLCertVerificationError,
                interrupt: BaseException | None = None) -> None:
        self._refusal = _Refusal(error, interrupt)
        self.chain = ()

    def _raise(self, conn: Any) -> None:
        refusal = self._refusal
        assert refusal is not None
        if refusal.interrupt is not None:
            interrupt, refusal.interrupt = refusal.interrupt, None
            refusal.reported = True
            raise interrupt
        if not refusal.reported or _FAILED_CALLS_REPEAT:
            refusal.reported = True
            _explain(refusal.error)
            # What failed inside OpenSSL because the connection was ended
            # (EOF, a broken pipe) is a consequence, not news.
            refusal.error.__suppress_context__ = True
            # Without the frames of an earlier raise (PyPy raises it at every
            # call): they would pile up on its traceback, and keep them alive.
            raise refusal.error.with_traceback(None)
        # As OpenSSL fails every call on a connection whose handshake failed.
        raise failed_call_error(self.settings.reads_memory)

    def _hostname(self) -> str | None:
        return self.settings.hostname if self.settings.check_hostname else None


def _verify_served(conn: Any, settings: Settings,
                   served: list[bytes]) -> tuple[int, list[bytes]]:
    """Verify ``served`` under ``settings``, against what the connection's context supplies
    now: its trust store, its security level after a swap, its AIA options."""
    from .verify import Request, verify_chain  # OpenSSL's verifier: only when one runs

    context = conn.context
    level = (settings.security_level if context is settings.context
             else security_level(context))
    hostname = settings.hostname if settings.check_hostname else None
    request: Request = Request(hostname, settings.verify_flags, settings.host_flags, level)
    chase_id, chain = verify_chain(served, context, request, options_for(context),
                                   synchronous=not settings.reads_memory)
    return chase_id, chain


def _identity(conn: Any) -> bytes | None:
    """What tells the handshake now in effect from any other: its tls-unique value
    (RFC 5929: the first Finished message of the latest handshake)."""
    try:
        value = conn.get_channel_binding("tls-unique")
    except (ValueError, NotImplementedError, OSError):
        return None
    return bytes(value) if value is not None else None


def _explain(error: ssl.SSLCertVerificationError) -> None:
    from ...records import attach  # the report records: only once a chain failed

    attach(error, getattr(error, "aia_chase_id", 0))


# ---- The connection itself: what wrappers call -----------------------------------

class VerifiedSSL:
    """``_ssl``'s low-level connection with its verifier: what ``_wrap_socket()`` and
    ``_wrap_bio()`` return for a client connection whose verification was set aside.

    The calls that can complete a handshake or move application data ask the
    verifier; everything else reaches the low-level object as it is.
    """

    __slots__ = ("_aia_real", "_aia_verifier")

    def __init__(self, real: Any, verifier: ConnectionVerifier) -> None:
        object.__setattr__(self, "_aia_real", real)
        object.__setattr__(self, "_aia_verifier", verifier)

    # -- everything not verification's: the low-level object's own

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._aia_real, name)
        # Interpreters add their own ways in: PyPy's ssl.py writes through
        # _write_with_length and reads through _read_buf and _read_no_buf.
        # Whatever reads or writes goes through the same checks as read()
        # and write(), so no call can move data around the verifier.
        if callable(value) and "write" in name:
            return functools.partial(self._write, value)
        if callable(value) and "read" in name:
            return functools.partial(self._read, value)
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._aia_real, name, value)  # context (a swap), owner, session...

    def __repr__(self) -> str:
        return f"<aia_ext verified {self._aia_real!r}>"

    @property
    def verifier(self) -> ConnectionVerifier:
        verifier: ConnectionVerifier = self._aia_verifier
        return verifier

    # -- the calls that complete handshakes or move data

    def do_handshake(self) -> None:
        verifier = self._aia_verifier
        verifier.raise_if_refused(self)
        self._call(self._aia_real.do_handshake)
        verifier.check(self)

    def read(self, *args: Any) -> Any:
        return self._read(self._aia_real.read, *args)

    def write(self, data: Any) -> Any:
        return self._write(self._aia_real.write, data)

    def _read(self, read: Callable[..., Any], *args: Any) -> Any:
        verifier = self._aia_verifier
        self._ready(verifier)
        data = self._call(lambda: read(*args))
        if verifier.renegotiable:
            verifier.check(self)  # a renegotiation inside the read: its data waits
        return data

    def _write(self, write: Callable[..., Any], *args: Any) -> Any:
        verifier = self._aia_verifier
        self._ready(verifier)
        if verifier.renegotiable:
            # Finish a renegotiation under way without application data, and
            # verify it (SSL_do_handshake returns at once otherwise).
            self._call(self._aia_real.do_handshake)
            verifier.check(self)
        return self._call(lambda: write(*args))

    def _ready(self, verifier: ConnectionVerifier) -> None:
        """A refused connection fails; a handshake nobody verified yet is driven and
        verified first, never completed inside SSL_read or SSL_write."""
        verifier.raise_if_refused(self)
        if verifier.handshake_pending:
            self.do_handshake()

    def _call(self, call: Callable[[], Any]) -> Any:
        """``call``, with a failure caused by a refusal inside it raised as the refusal."""
        try:
            return call()
        except OSError:
            # A connection refused inside the handshake fails there, on its
            # shut socket: the refusal is what the caller must see.
            self._aia_verifier.raise_if_refused(self)
            raise

    # -- what a refused connection shows, as a plain one whose handshake failed

    def getpeercert(self, binary_form: bool = False) -> Any:
        verifier = self._aia_verifier
        if verifier.refused:
            raise ValueError("handshake not done yet")
        peer = self._aia_real.getpeercert(binary_form)
        if binary_form or peer != {} or not verifier.verified:
            return peer
        return _peer_dictionary(self._aia_real.getpeercert(True))

    def version(self) -> str | None:
        if self._aia_verifier.refused:
            return None
        return self._aia_real.version()  # type: ignore[no-any-return]

    def get_verified_chain(self) -> Any:
        """The path the fallback verified (also when completed by AIA or a pool)."""
        verifier = self._aia_verifier
        if not verifier.verified:
            return []
        real = list(self._aia_real.get_verified_chain() or [])
        ders = [c if isinstance(c, bytes) else c.public_bytes(_ENCODING_DER) for c in real]
        if tuple(ders) == verifier.chain:
            return real  # OpenSSL built the same path: its own objects
        return [VerifiedCertificate(der) for der in verifier.chain]

    # -- sessions (sessions.py)

    @property
    def session(self) -> Any:
        """A session read from a connection the fallback verified may be resumed."""
        session = self._aia_real.session
        verifier = self._aia_verifier
        if session is None:
            return verifier.declined
        if verifier.verified:
            sessions.remember(sessions.session_id(session),
                              sessions.VerifiedSession(verifier.chain, verifier.chase_id))
        return session

    @session.setter
    def session(self, value: Any) -> None:
        # A session nobody verified is not offered, as plain ssl does not
        # offer one whose handshake failed; anything else goes on, to be
        # checked (or refused) as ssl checks it.
        known = verified_session(value)
        if not isinstance(value, ssl.SSLSession) or known is not None:
            self._aia_real.session = value
            self._aia_verifier.offered = known
        else:
            self._aia_verifier.declined = value


_ENCODING_DER = getattr(ssl._ssl, "ENCODING_DER", 1)  # type: ignore[attr-defined]


class VerifiedCertificate:
    """A certificate of a path the fallback verified, where OpenSSL built another (one
    completed by AIA): what ``get_verified_chain()`` reads from it."""

    __slots__ = ("der",)

    def __init__(self, der: bytes) -> None:
        self.der = der

    def public_bytes(self, format: int = 0) -> Any:
        if format == _ENCODING_DER:
            return self.der
        return ssl.DER_cert_to_PEM_cert(self.der)

    def get_info(self) -> Any:
        """As ``_ssl.Certificate.get_info()``: ssl's dictionary of the certificate."""
        return _peer_dictionary(self.der)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, VerifiedCertificate) and other.der == self.der

    def __hash__(self) -> int:
        return hash(self.der)

    def __repr__(self) -> str:
        from ...der import DERError, name_to_string, parse_certificate

        try:
            return f"<Certificate '{name_to_string(parse_certificate(self.der).subject)}'>"
        except DERError:
            return "<Certificate>"


def verified_ssl(conn: object) -> VerifiedSSL | None:
    """The ``VerifiedSSL`` of a connection: itself, or what a wrapper holds."""
    if isinstance(conn, VerifiedSSL):
        return conn
    sslobj = getattr(conn, "_sslobj", None)
    return sslobj if isinstance(sslobj, VerifiedSSL) else None


def verifier_of(conn: object) -> ConnectionVerifier | None:
    """The verifier of a connection whose verification was set aside (None: OpenSSL's)."""
    sslobj = verified_ssl(conn)
    return sslobj.verifier if sslobj is not None else None


def unwrapped(sslobj: object) -> object:
    """``_ssl``'s own low-level object behind a ``VerifiedSSL`` (the object itself
    otherwise), for the binding, which reads its C structure."""
    return sslobj._aia_real if isinstance(sslobj, VerifiedSSL) else sslobj


def verified_session(session: Any) -> sessions.VerifiedSession | None:
    """What the fallback verified for ``session``: a connection whose verification is set
    aside offers only a session known to come out of a verified one (sessions.py)."""
    if not isinstance(session, ssl.SSLSession):
        return None
    return sessions.recall(sessions.session_id(session))


def _peer_dictionary(der: bytes) -> Any:
    """getpeercert(): ssl's dictionary for a connection the fallback verified.

    CPython decides whether to decode the certificate by the context's
    verify mode, which the fallback restores at once; PyPy 3.10+ asks the
    connection's own mode (SSL_get_verify_mode), which stays CERT_NONE, and
    so returns {} for a verified peer.  There the certificate is decoded by
    the interpreter's own decoder, so the dictionary is ssl's to the byte.
    """
    import tempfile  # ~5 ms with shutil: kept off `import aia_ext`

    handle, path = tempfile.mkstemp(prefix="aia-ext-peer-", suffix=".pem")
    try:
        with os.fdopen(handle, "w", encoding="ascii") as f:
            f.write(ssl.DER_cert_to_PEM_cert(der))
        return ssl._ssl._test_decode_cert(path)  # type: ignore[attr-defined]
    finally:
        os.unlink(path)
