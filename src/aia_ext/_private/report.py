"""Per-connection reports: what AIA chasing did during one verification.

The engine that verified a connection says which chase belongs to it (the
native engine stores the chase id in the connection's own SSL ex_data; the
fallback engine on the socket object), so ``report(conn)`` finds exactly this
connection's chase, and a connection that needed none has no report.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from . import binding, engines
from .chase import finished

if TYPE_CHECKING:
    from .chase.core import Chase

#: Where an added certificate came from.
Source = Literal["network", "memory cache", "disk cache", "intermediates pool"]


@dataclass(frozen=True)
class AddedCertificate:
    """A certificate AIA chasing added to the chain, as untrusted material."""

    subject: str
    issuer: str
    url: str  # "" when it came from the intermediates pool
    source: Source
    nbytes: int
    elapsed_ms: float
    der: bytes = field(repr=False)


@dataclass(frozen=True)
class FailedAttempt:
    """A caIssuers URL (or a certificate without one) that gave nothing."""

    url: str  # "" when the certificate had no usable caIssuers URL
    for_subject: str
    reason: str


@dataclass(frozen=True)
class Report:
    """What AIA chasing did for one verification.

    A report exists only when the served chain was incomplete (OpenSSL found
    no issuer for a certificate); ``report()`` returns None for a connection
    whose chain was complete.
    """

    verified: bool
    verify_code: int
    verify_message: str
    added: tuple[AddedCertificate, ...]
    failed: tuple[FailedAttempt, ...]
    #: DER certificates, leaf first, as verified (native engine: 3.10+; empty
    #: where the interpreter cannot say, or when verification failed).
    verified_chain: tuple[bytes, ...] = field(repr=False)
    network_fetches: int
    elapsed_ms: float


def from_chase(state: Chase, verified_chain: tuple[bytes, ...]) -> Report:
    added = tuple(
        AddedCertificate(a.subject, a.issuer, a.url, a.source, a.nbytes,  # type: ignore[arg-type]
                         a.elapsed_ms, a.der)
        for a in state.added
    )
    failed = tuple(FailedAttempt(a.url, a.for_subject, a.outcome)
                   for a in state.attempts if a.outcome != "ok")
    return Report(state.ok, state.error, binding.verify_error_string(state.error),
                  added, failed, verified_chain if state.ok else (), state.fetches,
                  state.elapsed_ms)


def report(conn: object) -> Report | None:
    """The AIA report of ``conn``'s handshake, or None if no chasing was needed.

    ``conn`` is an ``ssl.SSLSocket`` or ``ssl.SSLObject`` whose context is
    enabled, after its handshake, or the ``_ssl._SSLSocket`` inside either
    (what httpx/httpcore return as ``get_extra_info("ssl_object")``).
    Reports of the most recent 1,024 chases are kept; an older one is None too.

    :raises TypeError: ``conn`` is not a TLS connection object.
    """
    for engine in engines.ALL:
        found = engine.chase_of(conn)
        if found is not None:
            break
    else:
        if not _is_connection(conn):
            raise TypeError("expected an ssl.SSLSocket or ssl.SSLObject, "
                            f"got {type(conn).__name__}")
        return None
    state = finished.get(found.chase_id) if found.chase_id else None
    return from_chase(state, found.verified_chain) if state is not None else None


def _is_connection(conn: object) -> bool:
    if isinstance(conn, (ssl.SSLSocket, ssl.SSLObject)):
        return True
    try:
        return isinstance(conn, binding.low_level_socket_type())
    except ImportError:  # pragma: no cover
        return False
