"""The records of a chase, as users see them: ``Report``, ``AddedCertificate``, ``FailedAttempt``.

Built from a finished chase by ``from_chase``; engines attach one to the
``ssl.SSLCertVerificationError`` of a verification that chased and still
failed (``exc.aia_report``), with a sentence a person can act on
(``explain``, added as a note on Python 3.11+).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from . import binding
from .chase import finished
from .chase.cause import sentence

if TYPE_CHECKING:
    from .chase.core import Chase

#: Where an added certificate came from.
Source = Literal["network", "memory cache", "disk cache", "intermediates pool", "learned"]


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


def explain(report: Report) -> str:
    """One sentence on why a chase did not complete the chain, for a person to act on:
    the same as the chase's WARNING (chase/cause.py)."""
    return sentence(report.verify_code, report.verify_message,
                    [(a.subject, a.issuer, a.url, a.source) for a in report.added],
                    [(f.url, f.for_subject, f.reason) for f in report.failed])


def attach(error: ssl.SSLCertVerificationError, chase_id: int) -> None:
    """Give a verification error its chase: ``error.aia_report`` and a note (3.11+)."""
    state = finished.get(chase_id) if chase_id else None
    if state is None or state.ok or getattr(error, "aia_report", None) is not None:
        return
    report = from_chase(state, ())
    error.aia_report = report  # type: ignore[attr-defined]
    error.aia_chase_id = chase_id  # type: ignore[attr-defined]  # for the asyncio integrations
    reason = explain(report)
    # requests and urllib3 show a wrapped error by its repr(), which is built
    # from its args, and never show its notes (issue 25): the reason goes into
    # args.  str() is SSLError's strerror, left as plain ssl has it, so code
    # that reads the message (CPython's own tests do) sees ssl's text.
    message = error.strerror
    if isinstance(message, str) and len(error.args) == 2 and error.args[1] == message:
        error.args = (error.args[0], f"{message} ({reason})")
    add_note = getattr(error, "add_note", None)  # Python 3.11+: tracebacks show it
    if add_note is not None:
        add_note(reason)
