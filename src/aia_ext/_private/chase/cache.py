"""The process-wide in-memory cache of AIA responses, keyed by URL.

- A success is kept until the earliest notAfter among its certificates (past
  that it could not complete a valid chain anyway), within an LRU bound.
- A failure is kept for a short negative TTL, so a dead AIA server costs one
  timeout per TTL, not one per handshake.
- Concurrent verifications that need the same URL wait for one fetch (single
  flight): N handshakes against a cold cache cause one request per URL, whether
  they run in threads or as asyncio tasks (the asyncio fetcher, afetch.py, leads
  and waits on the same flights).

Entries hold parsed certificates, so a warm hit costs no parsing.  Policy
refusals are never cached: they depend on the asking context's options.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import contextvars
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from ..der import ParsedCertificate

#: Entries kept at most; a process rarely meets more than a few dozen CAs.
MAX_ENTRIES = 1024
#: Seconds a failed URL is not retried (Chromium-like; short enough that an
#: AIA server coming back is noticed within a minute).
NEGATIVE_TTL = 60.0


@dataclass(frozen=True)
class CacheEntry:
    """What one URL gave: certificates, or the reason it gave none."""

    url: str
    certificates: tuple[ParsedCertificate, ...] = ()
    error: str | None = None
    nbytes: int = 0
    fetch_ms: float = 0.0  # network time, redirects included
    parse_ms: float = 0.0
    expires_at: float = field(default=0.0, compare=False)  # time.monotonic()
    shareable: bool = True  # False: valid only under the policy that produced it
    from_disk: bool = field(default=False, compare=False)  # loaded from the disk cache
    #: The refusal ``allow_private=False`` gives the destination this answer came
    #: from, or None (a public one): checked on every use (issue 32, item 6).
    private: str | None = field(default=None, compare=False)
    #: What the chase derived from ``certificates`` for a given child issuer
    #: (so a warm hit does no name matching or encoding); filled lazily.
    derived: dict[Any, Any] = field(default_factory=dict, compare=False, repr=False)


def success_expiry(certificates: tuple[ParsedCertificate, ...]) -> float:
    """Monotonic expiry of a success: the earliest notAfter, or a TTL if past."""
    seconds = min(c.not_after for c in certificates) - time.time()
    return time.monotonic() + max(seconds, NEGATIVE_TTL)


class _Flight:
    """One fetch under way; threads wait on ``done``, asyncio tasks on ``future``."""

    __slots__ = ("done", "entry", "future")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.entry: CacheEntry | None = None
        # Resolved (to the entry, or None) when ``done`` is set.
        self.future: concurrent.futures.Future[CacheEntry | None] = concurrent.futures.Future()

    def finish(self, entry: CacheEntry | None) -> None:
        self.entry = entry
        self.done.set()
        self.future.set_result(entry)


class MemoryCache:
    """Thread-safe URL -> CacheEntry map with LRU eviction and single flight."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self._max_entries = max_entries
        self._entries: OrderedDict[str, CacheEntry] = OrderedDict()
        self._flights: dict[str, _Flight] = {}
        self._lock = threading.Lock()

    def get(self, url: str) -> CacheEntry | None:
        """A fresh entry for ``url``, or None."""
        with self._lock:
            entry = self._entries.get(url)
            if entry is None:
                return None
            if entry.expires_at <= time.monotonic():
                del self._entries[url]
                return None
            self._entries.move_to_end(url)
            return entry

    def get_or_fetch(
        self, url: str, fetch: Callable[[], CacheEntry], wait: float
    ) -> tuple[CacheEntry, bool]:
        """The entry for ``url``, fetching it once however many threads ask.

        Returns (entry, fetched_here).  A thread that finds a fetch under way
        waits at most ``wait`` seconds for it.  An entry that is not
        ``shareable`` (a refusal by the leader's own policy) is neither stored
        nor handed to waiters: they fetch under their own policy instead.
        """
        deadline = time.monotonic() + wait
        while True:
            with self._lock:
                flight = self._flights.get(url)
                leader = flight is None
                if leader:
                    flight = self._flights[url] = _Flight()
            assert flight is not None
            if leader:
                return self._lead(url, flight, fetch), True
            left = deadline - time.monotonic()
            if not flight.done.wait(max(left, 0.0)):
                return CacheEntry(url, error="timeout: waiting for a concurrent fetch"), False
            if flight.entry is not None and flight.entry.shareable:
                return flight.entry, False

    def _lead(self, url: str, flight: _Flight, fetch: Callable[[], CacheEntry]) -> CacheEntry:
        entry: CacheEntry | None = None
        try:
            entry = fetch()
            if entry.shareable:
                self._store(entry)
            return entry
        finally:
            self._land(url, flight, entry)

    def _land(self, url: str, flight: _Flight, entry: CacheEntry | None) -> None:
        with self._lock:
            self._flights.pop(url, None)
        flight.finish(entry)

    async def get_or_fetch_async(
        self, url: str, fetch: Callable[[], Awaitable[CacheEntry]], wait: float
    ) -> tuple[CacheEntry, bool]:
        """``get_or_fetch`` for an asyncio task: the same flights, awaited, not blocked on.

        A task cancelled while it leads lands its flight with nothing (waiters
        then fetch themselves) and stores nothing: no half-filled entry.
        """
        import asyncio  # only the asyncio fetcher calls this

        deadline = time.monotonic() + wait
        while True:
            with self._lock:
                flight = self._flights.get(url)
                leader = flight is None
                if leader:
                    flight = self._flights[url] = _Flight()
            assert flight is not None
            if leader:
                entry: CacheEntry | None = None
                try:
                    entry = await fetch()
                    if entry.shareable:
                        self._store(entry)
                    return entry, True
                finally:
                    self._land(url, flight, entry)
            left = deadline - time.monotonic()
            try:
                # shield: a waiter's timeout or cancellation must not cancel the
                # concurrent future another thread or task will resolve.
                landed = await asyncio.wait_for(
                    asyncio.shield(asyncio.wrap_future(flight.future)), max(left, 0.0))
            except asyncio.TimeoutError:
                return CacheEntry(url, error="timeout: waiting for a concurrent fetch"), False
            if landed is not None and landed.shareable:
                return landed, False

    def put(self, entry: CacheEntry) -> None:
        """Insert an entry obtained elsewhere (the disk cache)."""
        self._store(entry)

    def _store(self, entry: CacheEntry) -> None:
        with self._lock:
            self._entries[entry.url] = entry
            self._entries.move_to_end(entry.url)
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)

    def discard(self, url: str) -> None:
        """Forget the entry for ``url``, if any."""
        with self._lock:
            self._entries.pop(url, None)

    def clear(self) -> None:
        """Forget every entry (fetches under way finish normally)."""
        with self._lock:
            self._entries.clear()

    def _after_fork_in_child(self) -> None:
        # A lock held by another thread at fork() stays held forever in the
        # child; flights of threads that do not exist there never finish.
        self._lock = threading.Lock()
        self._flights = {}


cache = MemoryCache()

#: A cache of its own for what runs in this context (``fresh()``), else None.
_scope: contextvars.ContextVar[MemoryCache | None] = contextvars.ContextVar(
    "aia_ext_cache_scope", default=None)


def current() -> MemoryCache:
    """The cache the chase uses here: the process's, or a ``fresh()`` one."""
    return _scope.get() or cache


@contextlib.contextmanager
def fresh() -> Iterator[None]:
    """Answer every fetch inside from a cache of its own, as a fresh client would.

    ``aia-ext check`` checks each target so (issue 32, item 1): one target's
    answer must not depend on what another fetched before it, or at the same
    time, or the batch's order and concurrency would change verdicts, and a
    caIssuers URL shared by a fleet would be fetched once and then never
    tested again.
    """
    token = _scope.set(MemoryCache())
    try:
        yield
    finally:
        _scope.reset(token)

if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=cache._after_fork_in_child)
