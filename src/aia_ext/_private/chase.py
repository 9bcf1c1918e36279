"""One verification's AIA chase: which issuer to look for, where, and within what budget.

The C callback calls ``missing()`` each time X509_verify_cert stops on a
missing issuer and ``done()`` once at the end.  State that must live across
those calls (URLs tried, fetches made, the deadline) sits in a ``Session``.

Every certificate found here is handed to C as *untrusted* chain material; C
re-runs OpenSSL's verification, which alone decides (DESIGN.md invariant 1).
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from .cache import NEGATIVE_TTL, CacheEntry, cache, success_expiry
from .der import ParsedCertificate, names_match, parse_certificate
from .errors import FetchError
from .fetch import fetch_url
from .parse import parse_certificates
from .urls import url_refusal

if TYPE_CHECKING:
    from .options import Options

__all__ = ["Attempt", "Session", "done", "missing"]

log = logging.getLogger(__name__)

#: Adds one DER certificate to the verification's untrusted stack (C side);
#: returns 1 added, 0 already present, -1 unusable.
AddUntrusted = Callable[[bytes], int]


@dataclass
class Attempt:
    """One caIssuers URL considered for one certificate."""

    url: str
    for_subject: str
    outcome: str  # "ok", or the reason it gave nothing
    source: str = ""  # "network" / "memory cache" / "" when never fetched
    nbytes: int = 0
    elapsed_ms: float = 0.0
    added: int = 0


@dataclass(frozen=True)
class Added:
    """A certificate handed to OpenSSL as untrusted chain material."""

    subject: str
    issuer: str
    url: str
    source: str  # "network" / "memory cache"
    nbytes: int
    elapsed_ms: float
    der: bytes


@dataclass
class Session:
    """State of one verification that needed AIA."""

    id: int
    options: Options
    started: float
    deadline_at: float
    fetches: int = 0
    tried: set[str] = field(default_factory=set)
    attempts: list[Attempt] = field(default_factory=list)
    added: list[Added] = field(default_factory=list)
    # Where the time went: network, parsing, and OpenSSL re-verifying after
    # each answer (measured from one answer to the next call or the end).
    fetch_ms: float = 0.0
    parse_ms: float = 0.0
    reverify_ms: float = 0.0
    answered_at: float | None = None
    ok: bool = False
    error: int = 0
    depth: int = 0
    elapsed_ms: float = 0.0


_ids = itertools.count(1)
_sessions: dict[int, Session] = {}
_sessions_lock = threading.Lock()


def _after_fork_in_child() -> None:
    # Sessions of threads that do not exist in the child never end, and a
    # lock another thread held at fork() would stay held forever.
    global _sessions_lock
    _sessions_lock = threading.Lock()
    _sessions.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _open(options: Options) -> Session:
    now = time.monotonic()
    session = Session(next(_ids), options, now, now + options.deadline)
    with _sessions_lock:
        _sessions[session.id] = session
    return session


def session_for(session_id: int, options: Options) -> tuple[Session, int]:
    """The session with ``session_id``, or a new one (id 0 means none yet)."""
    with _sessions_lock:
        existing = _sessions.get(session_id) if session_id else None
    if existing is not None:
        return existing, session_id
    session = _open(options)
    return session, session.id


def _issuer_candidates(child: ParsedCertificate,
                       certs: tuple[ParsedCertificate, ...]) -> list[ParsedCertificate]:
    """The certificates that can extend ``child`` upwards, by name.

    OpenSSL only ever considers a certificate whose subject equals the child's
    issuer (X509_check_issued), so anything else in a response is dead weight
    at best and junk at worst.  A bundle holding the issuer's issuer too (a
    two-certificate PKCS#7) is followed up as far as names connect.
    """
    chosen: list[ParsedCertificate] = []
    wanted = child.issuer
    pool = list(certs)
    while pool:
        matches = [c for c in pool if names_match(c.subject, wanted)]
        if not matches:
            break
        chosen.extend(matches)
        pool = [c for c in pool if c not in matches]
        if names_match(matches[0].issuer, matches[0].subject):
            break
        wanted = matches[0].issuer
    return chosen


def _candidates_for(child: ParsedCertificate,
                    entry: CacheEntry) -> tuple[tuple[bytes, str, str], ...]:
    """(DER, subject, issuer) of ``entry``'s certificates that can extend ``child``.

    Memoized on the cache entry, keyed by the child's issuer name: a warm
    hit then costs a dictionary lookup instead of name matching.
    """
    derived: tuple[tuple[bytes, str, str], ...] | None = entry.derived.get(child.issuer)
    if derived is None:
        derived = tuple((c.der, c.subject_text, c.issuer_text)
                        for c in _issuer_candidates(child, entry.certificates))
        entry.derived[child.issuer] = derived
    return derived


def _network_entry(url: str, options: Options, deadline_at: float) -> CacheEntry:
    started = time.monotonic()
    try:
        body = fetch_url(url, options, deadline_at)
        fetched = time.monotonic()
        certs = tuple(parse_certificates(body))
    except FetchError as exc:
        elapsed = (time.monotonic() - started) * 1000
        log.debug("fetch of %s failed after %.1f ms: %s", url, elapsed, exc)
        return CacheEntry(url, error=str(exc), fetch_ms=elapsed,
                          expires_at=time.monotonic() + NEGATIVE_TTL,
                          shareable=not exc.is_policy)
    parse_ms = (time.monotonic() - fetched) * 1000
    fetch_ms = (fetched - started) * 1000
    log.debug("fetched %s: %d bytes, %d certificate(s) in %.1f ms (+%.2f ms parsing)",
              url, len(body), len(certs), fetch_ms, parse_ms)
    return CacheEntry(url, certs, None, len(body), fetch_ms, parse_ms, success_expiry(certs))


def _lookup(session: Session, url: str) -> tuple[CacheEntry | None, str]:
    """The entry for ``url`` from memory, disk or the network, and its source."""
    entry = cache.get(url)
    if entry is not None:
        return entry, "memory cache"
    if session.options.cache_dir is not None:
        from . import diskcache

        certs = diskcache.load(session.options.cache_dir, url)
        if certs is not None:
            entry = CacheEntry(url, certs, None, sum(len(c.der) for c in certs), 0.0, 0.0,
                               success_expiry(certs))
            cache.put(entry)
            return entry, "disk cache"
    if session.fetches >= session.options.max_fetches:
        return None, f"fetch limit reached ({session.options.max_fetches} per verification)"
    left = session.deadline_at - time.monotonic()
    if left <= 0:
        return None, "deadline reached"
    session.fetches += 1
    entry, _fetched_here = cache.get_or_fetch(
        url, lambda: _network_entry(url, session.options, session.deadline_at), left
    )
    return entry, "network"


def missing(
    session: Session, der: bytes, depth: int, error: int, add: AddUntrusted
) -> int:
    """Find issuers for the certificate ``der`` and add them; how many were added."""
    _account_reverify(session)
    added = _missing(session, der, depth, error, add)
    session.answered_at = time.monotonic() if added > 0 else None
    return added


def _account_reverify(session: Session) -> None:
    if session.answered_at is not None:
        session.reverify_ms += (time.monotonic() - session.answered_at) * 1000
        session.answered_at = None


def _from_pool(session: Session, child: ParsedCertificate, add: AddUntrusted) -> int:
    """Add issuers of ``child`` from the ``intermediates`` pool: no fetch needed."""
    added = 0
    for cert in _issuer_candidates(child, session.options.intermediates):
        if add(cert.der) > 0:
            added += 1
            session.added.append(Added(cert.subject_text, cert.issuer_text, "",
                                       "intermediates pool", len(cert.der), 0.0, cert.der))
    return added


@functools.lru_cache(maxsize=256)
def _child(der: bytes) -> tuple[ParsedCertificate, str]:
    """The certificate's fields and subject text, read once per certificate.

    The same leaf comes back on every connection to a server; this keeps the
    warm-cache path to a dictionary lookup (see benchmarks: warm_incomplete).
    """
    child = parse_certificate(der)
    return child, child.subject_text or "(empty subject)"


def _missing(session: Session, der: bytes, depth: int, error: int, add: AddUntrusted) -> int:
    try:
        child, subject = _child(der)
    except ValueError as exc:  # DERError: OpenSSL read it, der.py cannot
        session.attempts.append(Attempt("", f"certificate at depth {depth}",
                                        f"unreadable certificate ({exc})"))
        return 0
    urls = child.ca_issuers
    added = _from_pool(session, child, add)
    if added:
        return added
    log.debug("verification %d: issuer of %s (depth %d, error %d) missing; %d caIssuers URL(s)",
              session.id, subject, depth, error, len(urls))
    if not urls:
        session.attempts.append(Attempt("", subject, "no caIssuers URL"))
    for url in urls[: session.options.max_urls_per_cert]:
        if url in session.tried:  # cycles: a URL is fetched once per verification
            continue
        session.tried.add(url)
        refusal = url_refusal(url, session.options)
        if refusal is not None:
            session.attempts.append(Attempt(url, subject, refusal))
            continue
        if time.monotonic() >= session.deadline_at:
            session.attempts.append(Attempt(url, subject, "deadline reached"))
            break
        entry, source = _lookup(session, url)
        if entry is None:
            session.attempts.append(Attempt(url, subject, source))
            continue
        network = source == "network"
        attempt = Attempt(url, subject, entry.error or "ok", source,
                          entry.nbytes, entry.fetch_ms + entry.parse_ms if network else 0.0)
        session.attempts.append(attempt)
        if network:
            session.fetch_ms += entry.fetch_ms
            session.parse_ms += entry.parse_ms
        if entry.error is not None:
            continue
        candidates = _candidates_for(child, entry)
        if not candidates:
            attempt.outcome = "no certificate issued the child (subject mismatch)"
            continue
        for cert_der, cert_subject, cert_issuer in candidates:
            if add(cert_der) > 0:
                attempt.added += 1
                session.added.append(Added(cert_subject, cert_issuer, url, source,
                                           entry.nbytes, attempt.elapsed_ms, cert_der))
        if attempt.added:
            return attempt.added
        attempt.outcome = "nothing new (certificates already in the chain)"
    skipped = len(urls) - session.options.max_urls_per_cert
    if skipped > 0:
        log.debug("verification %d: ignored %d caIssuers URL(s) beyond max_urls_per_cert=%d",
                  session.id, skipped, session.options.max_urls_per_cert)
    return 0


def _store_on_disk(session: Session, directory: str) -> None:
    """Persist what completed this (verified) chain, per URL (DESIGN.md: like .NET)."""
    from . import diskcache

    by_url: dict[str, list[bytes]] = {}
    for added in session.added:
        if added.source in ("network", "memory cache"):
            by_url.setdefault(added.url, []).append(added.der)
    for url, certs in by_url.items():
        diskcache.store(directory, url, certs)


MISSING_ISSUER = frozenset({2, 20})  # X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT[_LOCALLY]


def _describe(attempt: Attempt) -> str:
    if not attempt.url:
        return f"{attempt.for_subject}: {attempt.outcome}"
    outcome = attempt.outcome
    if outcome == "ok":
        outcome = f"ok, {attempt.added} certificate(s) added"
    return f"{attempt.url} ({outcome})"


def done(session_id: int, ok: bool, error: int, depth: int) -> Session | None:
    """Close a session; log once if chasing was tried and the chain still failed."""
    with _sessions_lock:
        session = _sessions.pop(session_id, None)
    if session is None:
        return None
    _account_reverify(session)
    elapsed = (time.monotonic() - session.started) * 1000
    session.ok, session.error, session.depth, session.elapsed_ms = ok, error, depth, elapsed
    fetched = any(a.url for a in session.attempts)
    if ok:
        log.debug("verification %d: chain completed by AIA in %.1f ms (%d network fetch(es))",
                  session.id, elapsed, session.fetches)
        if session.options.cache_dir is not None:
            _store_on_disk(session, session.options.cache_dir)
    elif error not in MISSING_ISSUER:
        # The chain was completed; OpenSSL rejected it for another reason,
        # which the caller sees as the verify code.  Not an AIA problem.
        log.debug("verification %d: chain completed by AIA, then rejected with verify error %d "
                  "at depth %d", session.id, error, depth)
    elif fetched:
        log.warning("AIA chasing did not complete the chain of %s (verify error %d at depth %d, "
                    "%.0f ms): %s", session.attempts[0].for_subject, error, depth, elapsed,
                    "; ".join(_describe(a) for a in session.attempts))
    else:
        log.debug("verification %d: nothing to fetch: %s", session.id,
                  "; ".join(_describe(a) for a in session.attempts))
    with _sessions_lock:
        _finished[session.id] = session
        while len(_finished) > MAX_FINISHED:
            _finished.popitem(last=False)
    for observer in tuple(observers):
        observer(session)
    return session


#: Called with every finished Session (for reports and benchmarks).
observers: list[Callable[[Session], None]] = []
#: Finished sessions kept for aia_ext.report(); the oldest are dropped first.
MAX_FINISHED = 1024
_finished: OrderedDict[int, Session] = OrderedDict()


def finished(session_id: int) -> Session | None:
    """A finished session, if it is still among the most recent MAX_FINISHED."""
    with _sessions_lock:
        return _finished.get(session_id)
