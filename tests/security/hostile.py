"""Helpers shared by the adversarial suite: tight limits, timing and health checks."""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import aia_ext

#: Limits used throughout the suite, so that every case is fast to run.
TIMEOUT = 1.0
DEADLINE = 2.0
#: What "ends within the deadline" allows on top, for the handshake itself
#: and a loaded CI machine.
MARGIN = 1.5


def tight_context(root_file: str, **options: object) -> ssl.SSLContext:
    # The hostile cases are about what the fetch path does, on every
    # handshake: a chain learned from the first (issue 23) would skip it.
    settings: dict[str, object] = {"timeout": TIMEOUT, "deadline": DEADLINE,
                                   "learn_intermediates": False}
    settings.update(options)
    return aia_ext.create_default_context(cafile=root_file, **settings)


@contextmanager
def bounded(seconds: float = DEADLINE + MARGIN) -> Iterator[None]:
    """Assert that the block ends within ``seconds``."""
    started = time.monotonic()
    yield
    elapsed = time.monotonic() - started
    assert elapsed < seconds, f"took {elapsed:.2f}s, bound {seconds:.2f}s"


def settle_threads(baseline: int, timeout: float = 10.0) -> int:
    """Wait for worker threads to finish; the number still alive above baseline."""
    end = time.monotonic() + timeout
    while threading.active_count() > baseline and time.monotonic() < end:
        time.sleep(0.05)
    return threading.active_count() - baseline
