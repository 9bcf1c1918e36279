"""``aia-ext intermediates update``: CCADB's report into a cache directory's pool (issue 23).

The report is downloaded through the fetch path of the chase (fetch.py: the
same URL policy, address checks, proxy rules and strict HTTP parser), with
https allowed and a size limit of ``ccadb.MAX_REPORT_BYTES``; every row is
checked (ccadb.py) before the pool file is replaced, atomically, so a failed
or poisoned download leaves the pool in use as it was.
"""

from __future__ import annotations

import os
import ssl
import sys
import time
from typing import TextIO

from .ccadb import DEFAULT_URL, MAX_REPORT_BYTES, POOL_FILE
from .chase import preloaded
from .chase.fetch import fetch_url
from .errors import AIAError
from .logtext import escape
from .options import make_options, replace
from .stdlib_ssl import new_plain_context

__all__ = ["DEFAULT_URL", "update_pool"]

#: Seconds the download may take by default (the real report is ~10 MiB).
DEFAULT_TIMEOUT = 120.0


def update_pool(directory: str | None, url: str = DEFAULT_URL, *,
                timeout: float = DEFAULT_TIMEOUT, allow_private: bool = True,
                cafile: str | None = None, err: TextIO | None = None) -> tuple[str, int]:
    """Replace ``directory``'s pool with the report at ``url``: (the pool file, its size).

    ``directory`` None means ``AIA_EXT_CACHE_DIR``; ``cafile`` verifies an
    https mirror behind a private CA instead of the system store.  Progress
    goes to ``err`` (stderr).  Raises AIAError, ValueError or OSError, saying
    why, and then nothing was changed.
    """
    directory = directory or os.environ.get("AIA_EXT_CACHE_DIR") or None
    if directory is None:
        raise ValueError("no cache directory: pass --cache-dir or set AIA_EXT_CACHE_DIR")
    options = replace(
        make_options({"timeout": timeout, "deadline": timeout, "allow_https": True,
                      "allow_private": allow_private, "cache_dir": directory}),
        max_response_bytes=MAX_REPORT_BYTES)
    tls = None
    if cafile is not None:
        tls = new_plain_context(ssl.PROTOCOL_TLS_CLIENT)  # no AIA chasing for the download
        try:
            tls.load_verify_locations(cafile=cafile)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"--cafile {cafile}: no certificate could be loaded "
                             f"({getattr(exc, 'strerror', None) or exc})") from None
    stream = err if err is not None else sys.stderr
    progress = _Progress(stream, url)

    def fetch(address: str) -> bytes:
        return fetch_url(address, options, time.monotonic() + timeout, progress, tls)

    try:
        count = preloaded.update(directory, url, fetch)
    finally:
        progress.end()
    return os.path.join(directory, POOL_FILE), count


class _Progress:
    """What the download has received, on stderr: a line rewritten in place on a
    terminal, a line every few seconds in a log (issue 32, item 8)."""

    def __init__(self, stream: TextIO, url: str) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.every = 0.2 if self.tty else 2.0
        self.last = time.monotonic()
        self.shown = False
        stream.write(f"downloading {escape(url)}\n")
        stream.flush()

    def __call__(self, received: int) -> None:
        now = time.monotonic()
        if now - self.last < self.every:
            return
        self.last, self.shown = now, True
        text = f"downloading: {received / 1048576:.1f} MiB received"
        self.stream.write(f"\r{text}" if self.tty else f"{text}\n")
        self.stream.flush()

    def end(self) -> None:
        if self.tty and self.shown:
            self.stream.write("\r\033[K")
            self.stream.flush()


def run(directory: str | None, url: str, timeout: float, out: TextIO,
        cafile: str | None = None) -> int:
    """The command: one line on success (exit 0), one line naming the URL on failure
    (exit 1)."""
    try:
        path, count = update_pool(directory, url, timeout=timeout, cafile=cafile)
    except (AIAError, ValueError, OSError) as exc:
        print(f"aia-ext: error: the pool was not changed ({escape(url)}): {exc}",
              file=sys.stderr)
        return 1
    print(f"wrote {count} intermediates from {escape(url)} to {path}", file=out)
    return 0
