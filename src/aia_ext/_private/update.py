"""``aia-ext intermediates update``: CCADB's report into a cache directory's pool (issue 23).

The report is downloaded through the fetch path of the chase (fetch.py: the
same URL policy, address checks, proxy rules and strict HTTP parser), with
https allowed and a size limit of ``ccadb.MAX_REPORT_BYTES``; every row is
checked (ccadb.py) before the pool file is replaced, atomically, so a failed
or poisoned download leaves the pool in use as it was.
"""

from __future__ import annotations

import os
import sys
import time
from typing import TextIO

from .ccadb import DEFAULT_URL, MAX_REPORT_BYTES, POOL_FILE
from .chase import preloaded
from .chase.fetch import fetch_url
from .errors import AIAError
from .options import make_options, replace

__all__ = ["DEFAULT_URL", "update_pool"]

#: Seconds the download may take by default (the real report is ~10 MiB).
DEFAULT_TIMEOUT = 120.0


def update_pool(directory: str | None, url: str = DEFAULT_URL, *,
                timeout: float = DEFAULT_TIMEOUT, allow_private: bool = True,
                err: TextIO | None = None) -> tuple[str, int]:
    """Replace ``directory``'s pool with the report at ``url``: (the pool file, its size).

    ``directory`` None means ``AIA_EXT_CACHE_DIR``.  Raises AIAError or
    ValueError, saying why, and then nothing was changed.
    """
    directory = directory or os.environ.get("AIA_EXT_CACHE_DIR") or None
    if directory is None:
        raise ValueError("no cache directory: pass --cache-dir or set AIA_EXT_CACHE_DIR")
    options = replace(
        make_options({"timeout": timeout, "deadline": timeout, "allow_https": True,
                      "allow_private": allow_private, "cache_dir": directory}),
        max_response_bytes=MAX_REPORT_BYTES)
    stream = err if err is not None else sys.stderr
    show = stream.isatty()
    last = [0.0]

    def progress(received: int) -> None:
        now = time.monotonic()
        if show and now - last[0] >= 0.2:
            last[0] = now
            stream.write(f"\rdownloading: {received / 1048576:.1f} MiB")
            stream.flush()

    def fetch(address: str) -> bytes:
        return fetch_url(address, options, time.monotonic() + timeout, progress)

    try:
        count = preloaded.update(directory, url, fetch)
    finally:
        if show:
            stream.write("\r\033[K")
            stream.flush()
    return os.path.join(directory, POOL_FILE), count


def run(directory: str | None, url: str, timeout: float, out: TextIO) -> int:
    """The command: one line on success (exit 0), one line on failure (exit 1)."""
    try:
        path, count = update_pool(directory, url, timeout=timeout)
    except (AIAError, ValueError, OSError) as exc:
        print(f"aia-ext: error: the pool was not changed: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {count} intermediates to {path}", file=out)
    return 0
