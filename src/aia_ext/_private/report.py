"""Per-connection reports: what AIA chasing did during one handshake.

The C callback stores the chase's session id in the connection's own SSL
ex_data (an index of ours), so ``report(conn)`` finds exactly this
connection's chase, and a connection that needed none has no report.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import native

if TYPE_CHECKING:
    from .chase import Session

__all__ = ["FailedURL", "FetchedCertificate", "Report", "report"]


@dataclass(frozen=True)
class FetchedCertificate:
    """A certificate AIA chasing added to the chain, as untrusted material."""

    subject: str
    issuer: str
    url: str
    #: "network", "memory cache", "disk cache" or "intermediates pool"
    source: str
    nbytes: int
    elapsed_ms: float
    der: bytes


@dataclass(frozen=True)
class FailedURL:
    """A caIssuers URL (or a certificate without one) that gave nothing."""

    url: str  # "" when the certificate had no usable caIssuers URL
    for_subject: str
    reason: str


@dataclass(frozen=True)
class Report:
    """What AIA chasing did for one verification.

    A report exists only when the served chain was incomplete (OpenSSL found
    no issuer for a certificate), so ``chain_was_incomplete`` is always True
    here; ``report()`` returns None for a connection whose chain was complete.
    """

    chain_was_incomplete: bool
    verified: bool
    verify_code: int
    verify_message: str
    fetched: tuple[FetchedCertificate, ...]
    failed: tuple[FailedURL, ...]
    #: DER certificates, leaf first, as verified (native engine: 3.10+; empty
    #: where the interpreter cannot say, or when verification failed).
    verified_chain: tuple[bytes, ...]
    network_fetches: int
    elapsed_ms: float


def verify_message(code: int) -> str:
    """OpenSSL's text for a verify code (the fallback's table without OpenSSL)."""
    if code == 0:
        return "ok"
    try:
        module = native.bind()
    except Exception:  # noqa: BLE001 - no reachable OpenSSL: the fallback engine
        from .fallback import _TEXT

        return _TEXT.get(code, _TEXT[1])
    return str(module.ffi.string(module.lib.aia_ext_verify_error_string(code)).decode())


def from_session(session: Session, verified_chain: tuple[bytes, ...]) -> Report:
    fetched = tuple(
        FetchedCertificate(a.subject, a.issuer, a.url, a.source, a.nbytes, a.elapsed_ms, a.der)
        for a in session.added
    )
    failed = tuple(FailedURL(a.url, a.for_subject, a.outcome)
                   for a in session.attempts if a.outcome != "ok")
    return Report(True, session.ok, session.error, verify_message(session.error),
                  fetched, failed, verified_chain if session.ok else (), session.fetches,
                  session.elapsed_ms)


def _verified_chain(sslobj: object) -> tuple[bytes, ...]:
    getter = getattr(sslobj, "get_verified_chain", None)  # _ssl._SSLSocket, 3.10+
    if getter is None:
        return ()
    chain = getter() or []
    return tuple(c if isinstance(c, bytes) else c.public_bytes(ssl._ssl.ENCODING_DER)  # type: ignore[attr-defined]
                 for c in chain)


def report(conn: object) -> Report | None:
    """The AIA report of ``conn``'s handshake, or None if no chasing was needed.

    ``conn`` is an ``ssl.SSLSocket`` or ``ssl.SSLObject`` whose context is
    enabled, after its handshake, or the ``_ssl._SSLSocket`` inside either
    (what httpx/httpcore return as ``get_extra_info("ssl_object")``).
    Reports of the most recent 1,024 chases are kept; an older one is None too.
    """
    from . import chase

    # A low-level socket (httpx's "ssl_object") leads to its wrapper by `owner`.
    wrapper = getattr(conn, "owner", None) or conn
    fallback_session = getattr(wrapper, "__dict__", {}).get("_aia_session")
    if fallback_session is not None:  # verified by the fallback engine
        session = chase.finished(fallback_session) if fallback_session else None
        if session is None:
            return None
        return from_session(session, wrapper.__dict__.get("_aia_chain", ()))
    low_level = native.low_level_socket_type()
    if isinstance(conn, (ssl.SSLSocket, ssl.SSLObject)):
        sslobj = getattr(conn, "_sslobj", None)
    elif isinstance(conn, low_level):
        sslobj = conn
    else:
        raise TypeError(f"expected an ssl.SSLSocket or ssl.SSLObject, got {type(conn).__name__}")
    if not isinstance(sslobj, low_level):
        return None  # not connected, or closed
    session_id = native.session_of(sslobj)
    if not session_id:
        return None
    session = chase.finished(session_id)
    if session is None:
        return None
    return from_session(session, _verified_chain(sslobj))
