"""One verification's chase: the ``Chase`` state and the two calls engines make.

An engine calls ``on_missing_issuer()`` each time verification stops on a
certificate whose issuer is missing, and ``finish()`` once at the end.  State
that must live across those calls (URLs tried, fetches made, the deadline)
sits in a ``Chase``.  Issuers come from the intermediates pools (the
context's own and the cache directory's CCADB pool) and the learned
intermediates, then the memory and disk caches, then the network (fetch.py),
in that order.

Every certificate found here is handed to the engine as *untrusted* chain
material; the engine's verifier re-runs and alone decides (docs/design.md,
invariant 1).
"""

from __future__ import annotations

import contextvars
import functools
import itertools
import os
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from ..der import ParsedCertificate, names_match, parse_certificate
from ..errors import FetchError
from ..locks import HealingLock
from ..logtext import escape, get_logger
from ..x509_codes import MISSING_ISSUER
from . import cause, finished, learned
from .cache import NEGATIVE_TTL, CacheEntry, current, success_expiry
from .fetch import fetch_url, private_destinations
from .policy import url_refusal
from .response import certificates_in_response

if TYPE_CHECKING:
    from ..options import Options

log = get_logger(__name__)

#: Adds one DER certificate to the verification's untrusted stack (C side);
#: returns 1 added, 0 already present, -1 unusable.
AddUntrusted = Callable[[bytes], int]

#: Set by the asyncio integrations (aia_ext.aiohttp, .httpx, .asyncio) around
#: their connections: a fetch such a handshake needs is not made on the event
#: loop's thread but recorded (``Chase.deferred``), the verification fails at
#: once with its missing-issuer code, and the integration fetches with the
#: asyncio fetcher and connects again (issue 22).  Handshakes run in the
#: transport's context, a copy of the one its connection was made in.
#: Its value, when set, holds what the asyncio fetcher already fetched for this
#: connection (URL -> entry, failures by policy included, which the shared
#: cache does not keep): the next handshake's chase takes them from there.
DEFER_FETCHES: contextvars.ContextVar[dict[str, CacheEntry] | None] = contextvars.ContextVar(
    "aia_ext_defer_fetches", default=None)

#: Why an attempt was not made, when it was deferred to the asyncio fetcher.
DEFERRED = "deferred to the asyncio fetcher (not fetched on the event loop)"


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
    from_disk: bool = False  # the entry came from the disk cache (now or earlier)


@dataclass(frozen=True)
class Added:
    """A certificate handed to OpenSSL as untrusted chain material."""

    subject: str
    issuer: str
    url: str
    source: str  # "network" / "memory cache" / "disk cache" / "intermediates pool" / "learned"
    nbytes: int
    elapsed_ms: float
    der: bytes


@dataclass
class Chase:
    """State of one verification that needed AIA (one per verification, however many
    fetch-and-reverify rounds it takes; not to be confused with a TLS session)."""

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
    #: Fetches deferred to the asyncio fetcher: (caIssuers URL, the child's DER).
    deferred: list[tuple[str, bytes]] = field(default_factory=list)
    #: The path built so far when a fetch was first deferred (DER, leaf first):
    #: what the asyncio integration verifies offline to find further levels.
    path: tuple[bytes, ...] = ()
    path_source: Callable[[], Sequence[bytes]] | None = None
    ok: bool = False
    error: int = 0  # the last verification's: the completed chain's verdict
    depth: int = 0
    #: The path the last verification built (DER, leaf first).
    built: tuple[bytes, ...] = ()
    elapsed_ms: float = 0.0
    #: The handshake reads from its socket (``ssl.SSLSocket``): a synchronous
    #: caller, which blocks its thread for the handshake whatever it is, an
    #: event loop's included (a notebook cell's ``requests.get()``).  False for
    #: a transport's memory BIO (``ssl.SSLObject``: asyncio, anyio), whose
    #: handshake on a loop's thread is a coroutine's (issue 31, item 4).
    synchronous: bool = True
    #: URLs whose answer came from a private destination, and the refusal
    #: ``allow_private=False`` gives it: the disk cache keeps it with the answer.
    private_urls: dict[str, str] = field(default_factory=dict)


#: Issuer names memoized per cache entry (a real entry sees one or two).
MAX_DERIVED_PER_ENTRY = 8

_ids = itertools.count(1)
_chases: dict[int, Chase] = {}
_chases_lock = HealingLock()


def _after_fork_in_child() -> None:
    # Chases of threads that do not exist in the child never end, and a
    # lock another thread held at fork() would stay held forever.
    global _chases_lock
    _chases_lock = HealingLock()
    _chases.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _open(options: Options) -> Chase:
    now = time.monotonic()
    chase = Chase(next(_ids), options, now, now + options.deadline)
    with _chases_lock:
        _chases[chase.id] = chase
    return chase


def chase_for(chase_id: int, options: Options) -> tuple[Chase, int]:
    """The chase with ``chase_id``, or a new one (id 0 means none yet)."""
    with _chases_lock:
        existing = _chases.get(chase_id) if chase_id else None
    if existing is not None:
        return existing, chase_id
    chase = _open(options)
    return chase, chase.id


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
        # The key is a name from an unverified certificate: a server inventing
        # issuer names must not grow this memo without bound.
        if len(entry.derived) >= MAX_DERIVED_PER_ENTRY:
            entry.derived.clear()
        entry.derived[child.issuer] = derived
    return derived


def _network_entry(url: str, options: Options, deadline_at: float) -> CacheEntry:
    started = time.monotonic()
    reached: list[str] = []
    token = private_destinations.set(reached)
    try:
        body = fetch_url(url, options, deadline_at)
    except FetchError as exc:
        return failed_entry(url, exc, started)
    except Exception as exc:  # noqa: BLE001 - a bug on this path fails this URL, closed
        return internal_error_entry(url, exc, started)
    finally:
        private_destinations.reset(token)
    return entry_from_body(url, body, started, reached)


def entry_from_body(url: str, body: bytes, started: float,
                    private: Sequence[str] = ()) -> CacheEntry:
    """The cache entry for a fetched body (parsing counts against the deadline too)."""
    fetched = time.monotonic()
    try:
        # Parsing is linear in the body (bundle.py).
        certs = tuple(certificates_in_response(body))
    except FetchError as exc:
        return failed_entry(url, exc, started)
    except Exception as exc:  # noqa: BLE001 - a bug on this path fails this URL, closed
        return internal_error_entry(url, exc, started)
    parse_ms = (time.monotonic() - fetched) * 1000
    fetch_ms = (fetched - started) * 1000
    log.debug("fetched %s: %d bytes, %d certificate(s) in %.1f ms (+%.2f ms parsing)",
              escape(url), len(body), len(certs), fetch_ms, parse_ms)
    return CacheEntry(url, certs, None, len(body), fetch_ms, parse_ms, success_expiry(certs),
                      private=private[0] if private else None)


def failed_entry(url: str, exc: FetchError, started: float) -> CacheEntry:
    """A URL's failure, cached like any other so the next handshake does not repeat it."""
    elapsed = (time.monotonic() - started) * 1000
    log.debug("fetch of %s failed after %.1f ms: %s", escape(url), elapsed, escape(exc))
    return CacheEntry(url, error=str(exc), fetch_ms=elapsed,
                      expires_at=time.monotonic() + NEGATIVE_TTL, shareable=not exc.is_policy)


def internal_error_entry(url: str, exc: Exception, started: float) -> CacheEntry:
    # Still one URL's failure, so the next URL is tried (fail closed).
    log.debug("internal error fetching %s", escape(url), exc_info=exc)
    return failed_entry(url, FetchError("internal error", type(exc).__name__), started)


def _lookup(chase: Chase, url: str, child: ParsedCertificate) -> tuple[CacheEntry | None, str]:
    """The entry for ``url`` from memory, disk or the network, and its source."""
    deferred = DEFER_FETCHES.get()
    if deferred is not None and url in deferred:
        chase.fetches += 1  # made by the asyncio fetcher for this connection
        return deferred[url], "network"
    entry = current().get(url)
    if entry is not None:
        return entry, "memory cache"
    if chase.options.cache_dir is not None:
        from . import diskcache  # opt-in: its imports (tempfile...) only when enabled

        loaded = diskcache.load_entry(chase.options.cache_dir, url)
        if loaded is not None:
            certs, private = loaded
            entry = CacheEntry(url, certs, None, sum(len(c.der) for c in certs), 0.0, 0.0,
                               success_expiry(certs), from_disk=True, private=private)
            candidates = _candidates_for(child, entry)
            if candidates and diskcache.issued_child(child.der, [c[0] for c in candidates]):
                current().put(entry)
                return entry, "disk cache"
            # An entry that cannot extend this chain is not what the URL serves:
            # drop it and ask the network (docs/usage.md, "Caches").
            log.debug("disk cache: the entry for %s holds no issuer of %s; dropped",
                      escape(url), escape(child.subject_text))
            diskcache.discard(chase.options.cache_dir, url)
    if chase.fetches >= chase.options.max_fetches:
        return None, f"fetch limit reached ({chase.options.max_fetches} per verification)"
    if deferred is not None:
        chase.deferred.append((url, child.der))
        if not chase.path and chase.path_source is not None:
            chase.path = tuple(chase.path_source())
        return None, DEFERRED
    # Only a transport's handshake stalls a loop that should not wait: a
    # synchronous caller on the loop's thread chose to block it (a notebook
    # cell), and refusing or warning would only break it.
    on_loop = not chase.synchronous and _on_event_loop()
    if on_loop and not chase.options.fetch_on_event_loop:
        return None, ("refused on the event loop's thread (fetch_on_event_loop=False; "
                      "aia_ext.aprefetch() fetches off the loop)")
    left = chase.deadline_at - time.monotonic()
    if left <= 0:
        return None, "deadline reached"
    chase.fetches += 1
    started = time.monotonic()
    entry, _fetched_here = current().get_or_fetch(
        url, lambda: _network_entry(url, chase.options, chase.deadline_at), left
    )
    if on_loop:
        _warn_loop_blocked(url, (time.monotonic() - started) * 1000)
    return entry, "network"


def _on_event_loop() -> bool:
    """Whether this thread runs an asyncio event loop (whose every task now waits)."""
    asyncio = sys.modules.get("asyncio")  # not imported: no loop anywhere
    if asyncio is None:
        return False
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


_loop_warned = threading.Event()


def _warn_loop_blocked(url: str, elapsed_ms: float) -> None:
    """Once per process: a fetch stalled an event loop (issue 14: it did so silently)."""
    if _loop_warned.is_set():
        return
    _loop_warned.set()
    log.warning("aia_ext fetched %s on an asyncio event loop's thread, blocking the loop for "
                "%.0f ms; call aia_ext.aprefetch() before connecting, or pass "
                "fetch_on_event_loop=False to keep fetches off the loop (shown once)",
                escape(url), elapsed_ms)


def on_missing_issuer(
    chase: Chase, der: bytes, depth: int, error: int, add: AddUntrusted,
    path: Callable[[], Sequence[bytes]] | None = None,
) -> int:
    """Find issuers for the certificate ``der`` and add them; how many were added.

    ``path`` gives the path built so far (DER, leaf first); it is asked for
    only when a fetch is deferred (``DEFER_FETCHES``).
    """
    chase.path_source = path
    _account_reverify(chase)
    added = _missing(chase, der, depth, error, add)
    chase.answered_at = time.monotonic() if added > 0 else None
    return added


def _account_reverify(chase: Chase) -> None:
    if chase.answered_at is not None:
        chase.reverify_ms += (time.monotonic() - chase.answered_at) * 1000
        chase.answered_at = None


def _from_known(chase: Chase, child: ParsedCertificate, add: AddUntrusted) -> int:
    """Add issuers of ``child`` that need no fetch; how many were added.

    From the ``intermediates`` pool, the preloaded CCADB pool of the cache
    directory, and the learned intermediates (issue 23), all of them: a
    same-name decoy in one must not hide the real issuer in another.
    """
    options = chase.options
    known = [("intermediates pool", options.intermediates.issuers_of(child))]
    if options.cache_dir is not None:
        from . import preloaded  # opt-in: only with a cache directory

        known.append(("intermediates pool", preloaded.issuers_of(child, options)))
    if options.learn_intermediates:
        known.append(("learned", learned.issuers_of(child, options)))
    added = 0
    for source, certs in known:
        for cert in certs:
            if add(cert.der) > 0:
                added += 1
                chase.added.append(Added(cert.subject_text, cert.issuer_text, "", source,
                                         len(cert.der), 0.0, cert.der))
    return added


@functools.lru_cache(maxsize=256)
def _child(der: bytes) -> tuple[ParsedCertificate, str]:
    """The certificate's fields and subject text, read once per certificate.

    The same leaf comes back on every connection to a server; this keeps the
    warm-cache path to a dictionary lookup (see benchmarks: warm_incomplete).
    """
    child = parse_certificate(der)
    return child, child.subject_text or "(empty subject)"


def _missing(chase: Chase, der: bytes, depth: int, error: int, add: AddUntrusted) -> int:
    try:
        child, subject = _child(der)
    except ValueError as exc:  # DERError: OpenSSL read it, der.py cannot
        chase.attempts.append(Attempt("", f"certificate at depth {depth}",
                                        f"unreadable certificate ({exc})"))
        return 0
    urls = child.ca_issuers
    added = _from_known(chase, child, add)
    if added:
        return added
    log.debug("verification %d: issuer of %s (depth %d, error %d) missing; %d caIssuers URL(s)",
              chase.id, escape(subject), depth, error, len(urls))
    if not urls:
        chase.attempts.append(Attempt("", subject, "no caIssuers URL"))
    for url in urls[: chase.options.max_urls_per_cert]:
        if url in chase.tried:  # cycles: a URL is fetched once per verification
            continue
        chase.tried.add(url)
        refusal = url_refusal(url, chase.options)
        if refusal is not None:
            chase.attempts.append(Attempt(url, subject, refusal))
            continue
        if time.monotonic() >= chase.deadline_at:
            chase.attempts.append(Attempt(url, subject, "deadline reached"))
            break
        entry, source = _lookup(chase, url, child)
        if entry is None:
            chase.attempts.append(Attempt(url, subject, source))
            continue
        if entry.private is not None and not chase.options.allow_private:
            # An answer another context fetched from a destination this one
            # refuses: refused as the fetch itself would be, whatever the order
            # the contexts ran in, as url_filter is (issue 32, item 6).
            chase.attempts.append(Attempt(url, subject, entry.private))
            continue
        if entry.private is not None:
            chase.private_urls[url] = entry.private
        network = source == "network"
        attempt = Attempt(url, subject, entry.error or "ok", source,
                          entry.nbytes, entry.fetch_ms + entry.parse_ms if network else 0.0,
                          from_disk=entry.from_disk)
        chase.attempts.append(attempt)
        if network:
            chase.fetch_ms += entry.fetch_ms
            chase.parse_ms += entry.parse_ms
        if entry.error is not None:
            continue
        candidates = _candidates_for(child, entry)
        if not candidates:
            attempt.outcome = "no certificate issued the child (subject mismatch)"
            continue
        for cert_der, cert_subject, cert_issuer in candidates:
            if add(cert_der) > 0:
                attempt.added += 1
                chase.added.append(Added(cert_subject, cert_issuer, url, source,
                                           entry.nbytes, attempt.elapsed_ms, cert_der))
        if attempt.added:
            return attempt.added
        attempt.outcome = "nothing new (certificates already in the chain)"
    skipped = len(urls) - chase.options.max_urls_per_cert
    if skipped > 0:
        log.debug("verification %d: ignored %d caIssuers URL(s) beyond max_urls_per_cert=%d",
                  chase.id, skipped, chase.options.max_urls_per_cert)
    return 0


def _store_on_disk(chase: Chase, directory: str, verified: Sequence[bytes]) -> None:
    """Persist what completed this verified chain, per URL (like .NET's disk cache).

    Only certificates on the verified path: a response may hold others, and
    a chase may have added a same-name decoy from one URL before the real
    issuer from the next (issue 26, item 8); those never reach the disk.
    """
    from . import diskcache  # opt-in: only when cache_dir is set

    on_path = set(verified)
    by_url: dict[str, list[bytes]] = {}
    for added in chase.added:
        if added.source in ("network", "memory cache") and added.der in on_path:
            by_url.setdefault(added.url, []).append(added.der)
    for url, certs in by_url.items():
        diskcache.store(directory, url, certs, private=chase.private_urls.get(url))


def _forget_disk_entries(chase: Chase, directory: str) -> None:
    """Drop what the disk cache gave to a chain that then failed: the next
    verification asks the network instead of trusting the file again."""
    from . import diskcache  # opt-in: only when cache_dir is set

    for url in {a.url for a in chase.attempts if a.from_disk}:
        diskcache.discard(directory, url)
        current().discard(url)


def _describe(attempt: Attempt) -> str:
    if not attempt.url:
        return f"{attempt.for_subject}: {attempt.outcome}"
    outcome = attempt.outcome
    if outcome == "ok":
        outcome = f"ok, {attempt.added} certificate(s) added"
    return f"{attempt.url} ({outcome})"


def finish(chase_id: int, ok: bool, error: int, depth: int,
           built: Sequence[bytes] = ()) -> Chase | None:
    """Close a chase; log once if chasing was tried and the chain still failed.

    ``error`` and ``depth`` are the last verification's (the completed
    chain's), ``built`` the path it built (DER, leaf first): when ``ok``, the
    verified path, of which what the chase added may be kept on disk; else
    where the path stopped, for reports.
    """
    verified = built if ok else ()
    with _chases_lock:
        chase = _chases.pop(chase_id, None)
    if chase is None:
        return None
    _account_reverify(chase)
    chase.path_source = None  # it may reach into the engine's finished verification
    elapsed = (time.monotonic() - chase.started) * 1000
    chase.ok, chase.error, chase.depth, chase.elapsed_ms = ok, error, depth, elapsed
    chase.built = tuple(built)
    fetched = any(a.url for a in chase.attempts)
    if ok:
        log.debug("verification %d: chain completed by AIA in %.1f ms (%d network fetch(es))",
                  chase.id, elapsed, chase.fetches)
        if chase.options.cache_dir is not None:
            _store_on_disk(chase, chase.options.cache_dir, verified)
        finished.record(chase)
        return chase
    if chase.options.cache_dir is not None:
        # And then the same log line as without a disk cache (issue 26, item 9).
        _forget_disk_entries(chase, chase.options.cache_dir)
    if error not in MISSING_ISSUER:
        # The chain was completed; OpenSSL rejected it for another reason,
        # which the caller sees as the verify code.  Not an AIA problem.
        log.debug("verification %d: chain completed by AIA, then rejected with verify error %d "
                  "at depth %d", chase.id, error, depth)
    elif fetched and not chase.deferred:
        # The cause OpenSSL reported, as the exception's note gives it; what
        # each URL gave, at DEBUG.
        log.warning("AIA chasing did not complete the chain of %s (verify error %d at depth %d, "
                    "%.0f ms): %s", escape(chase.attempts[0].for_subject), error, depth, elapsed,
                    cause.sentence(error, "", [(a.subject, a.issuer, a.url, a.source)
                                               for a in chase.added],
                                   [(a.url, a.for_subject, a.outcome) for a in chase.attempts
                                    if a.outcome != "ok"]))
        log.debug("verification %d: %s", chase.id,
                  escape("; ".join(_describe(a) for a in chase.attempts), 2048))
    else:
        # Nothing fetched, or the fetches deferred to the asyncio fetcher (the
        # integration connects again, and that verification reports).
        log.debug("verification %d: nothing fetched: %s", chase.id,
                  escape("; ".join(_describe(a) for a in chase.attempts), 2048))
    finished.record(chase)
    return chase
