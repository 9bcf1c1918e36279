"""Connecting from an event loop without ever blocking it on a fetch (issue 22).

A handshake runs on the event loop's thread, so a fetch inside it would stall
every task.  The integrations (``aia_ext.aiohttp``, ``aia_ext.httpx``,
``aia_ext.asyncio``) connect with fetches *deferred* (``chase.core.DEFER_FETCHES``):
a handshake that needs a caIssuers URL the caches cannot answer fails at once
with its missing-issuer code, its chase recording the URLs.  ``connect()`` then
fetches them with the asyncio fetcher (same policy, limits, parser, caches and
single flight as the threaded path), finds any further missing level by
verifying the path offline, and connects once more; that handshake completes
the chain from the cache, and it alone decides.  A failure the caches cannot
change, or any other error, is raised as it came, with its ``aia_report``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
import weakref
from collections.abc import Awaitable, Hashable, Iterator
from typing import Callable, TypeVar

from . import engines, records  # noqa: F401  # records: loaded here, not on a loop
from .chase import afetch, finished
from .chase import core as chase
from .chase.cache import CacheEntry
from .engines.base import OfflineResult
from .x509_codes import MAX_ROUNDS, MISSING_ISSUER

T = TypeVar("T")


@contextlib.contextmanager
def deferring(fetched: dict[str, CacheEntry] | None = None) -> Iterator[None]:
    """Within this block (this task), handshakes defer their fetches, and take
    ``fetched`` (what the asyncio fetcher got for this connection) first."""
    token = chase.DEFER_FETCHES.set({} if fetched is None else fetched)
    try:
        yield
    finally:
        chase.DEFER_FETCHES.reset(token)


def certificate_error(exc: BaseException | None) -> ssl.SSLCertVerificationError | None:
    """The verification error behind a client library's exception, if there is one.

    httpx and httpcore chain it (``__cause__``/``__context__``); aiohttp keeps
    it as ``certificate_error`` on an exception that is itself a
    ``CertificateError``.  The one the handshake raised carries the chase.
    """
    seen: set[int] = set()
    found: ssl.SSLCertVerificationError | None = None
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        for candidate in (exc, getattr(exc, "certificate_error", None)):
            if isinstance(candidate, ssl.SSLCertVerificationError):
                if getattr(candidate, "aia_chase_id", 0):
                    return candidate
                found = found or candidate
        exc = exc.__cause__ or exc.__context__
    return found


async def complete(error: ssl.SSLCertVerificationError, context: ssl.SSLContext,
                   fetched: dict[str, CacheEntry]) -> bool:
    """Fetch what the refused handshake deferred into ``fetched``; whether connecting
    again may help (a handshake then takes them from there: ``deferring(fetched)``).

    False when the refusal was not a missing issuer whose fetch was deferred:
    then nothing is fetched and the caller raises the error as it is.
    """
    chase_id = getattr(error, "aia_chase_id", 0)
    state = finished.get(chase_id) if chase_id else None
    if state is None or state.error not in MISSING_ISSUER or not state.deferred:
        return False
    options = state.options
    deadline_at = time.monotonic() + options.deadline
    tried: set[str] = set()
    pending, path = state.deferred, state.path
    for _round in range(MAX_ROUNDS):
        urls = list(dict.fromkeys(url for url, _child in pending if url not in tried))
        urls = urls[: max(options.max_fetches - len(tried), 0)]
        if not urls or time.monotonic() >= deadline_at:
            break
        tried.update(urls)
        entries = await asyncio.gather(*(afetch.entry_for(url, options, deadline_at)
                                         for url in urls))
        fetched.update((url, entry) for url, (entry, _source) in zip(urls, entries))
        if not path:
            break
        # A further level missing?  The path so far, verified offline (no
        # network: fetches deferred) tells, from what was fetched; in a thread,
        # as the loop must not wait on a verification either.
        result = await _check_offline(context, path, fetched)
        again = finished.get(result.chase_id) if result.chase_id else None
        if result.ok or again is None or not again.deferred:
            break
        pending, path = again.deferred, again.path or path
    return True


#: Offline checks under way, per event loop.  Concurrent first connections to one
#: server, refused for the same missing issuer, verify the same path with the
#: same fetched certificates: one check, in one worker thread, answers them all.
#: Twenty threads verifying the same thing at once would hold the GIL against
#: the loop's own thread, and the loop would lag for them (issue 22).
_checks: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[Hashable, asyncio.Future[OfflineResult]]
] = weakref.WeakKeyDictionary()


async def _check_offline(context: ssl.SSLContext, path: tuple[bytes, ...],
                         fetched: dict[str, CacheEntry]) -> OfflineResult:
    """``path`` verified offline with ``fetched``, in a worker thread, shared by every
    task of this loop asking the same question while it runs."""
    flights = _checks.setdefault(asyncio.get_running_loop(), {})
    # Identities, not values: the flight's own copy of ``fetched`` and the
    # context it verifies with keep these objects (and so their ids) alive
    # until it is done and gone from ``flights``.
    key = (id(context), path, tuple(sorted((url, id(entry)) for url, entry in fetched.items())))
    flight = flights.get(key)
    if flight is None:
        flight = asyncio.ensure_future(
            asyncio.to_thread(_verify_deferring, context, path, dict(fetched)))
        flights[key] = flight

        def done(finished_flight: asyncio.Future[OfflineResult]) -> None:
            flights.pop(key, None)
            if not finished_flight.cancelled():
                finished_flight.exception()  # every waiter may have been cancelled

        flight.add_done_callback(done)
    # One waiter cancelled (its request abandoned) leaves the check to the others.
    return await asyncio.shield(flight)


def _verify_deferring(context: ssl.SSLContext, path: tuple[bytes, ...],
                      fetched: dict[str, CacheEntry]) -> OfflineResult:
    with deferring(fetched):
        return engines.for_context(context).verify_offline(context, list(path), None, None)


async def connect(make: Callable[[], Awaitable[T]], context: ssl.SSLContext) -> T:
    """``await make()`` with fetches deferred; once more if a fetch could help."""
    fetched: dict[str, CacheEntry] = {}
    with deferring(fetched):
        try:
            return await make()
        except Exception as exc:
            error = certificate_error(exc)
            if error is None or not await complete(error, context, fetched):
                raise
        return await make()
