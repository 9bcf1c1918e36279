"""The preloaded pool of a cache directory: CCADB's intermediates (issue 23).

``aia-ext intermediates update`` downloads CCADB's report, checks every row
(ccadb.py) and writes the pool file into a cache directory, atomically.
Every context whose ``cache_dir`` is that directory then tries the pool
before any fetch, after its own ``intermediates``.  The file is read under
the disk cache's directory checks, once per version of the file (its inode,
size and modification time), and only when an issuer is missing.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..bundle import BundleError, certificates_in_bundle
from ..ccadb import (
    MAX_REPORT_BYTES,
    MAX_ROWS,
    POOL_FILE,
    POOL_MAGIC,
    certificates_in_report,
    pool_file_bytes,
)
from ..der import ParsedCertificate
from ..logtext import escape, get_logger
from ..pool import EMPTY, IntermediatesPool
from . import diskcache

if TYPE_CHECKING:
    from ..options import Options

log = get_logger(__name__)

_lock = threading.Lock()
#: directory -> (the pool file's identity, its pool): read once per version.
_pools: dict[str, tuple[tuple[int, int, int], IntermediatesPool]] = {}


def pool_in(directory: str) -> IntermediatesPool:
    """The pool file of ``directory``; empty if there is none or it is unusable
    (a WARNING: a damaged file must not stop every connection)."""
    path = os.path.join(directory, POOL_FILE)
    try:
        info = os.stat(path)
    except OSError:
        return EMPTY
    identity = (info.st_ino, info.st_size, info.st_mtime_ns)
    with _lock:
        cached = _pools.get(directory)
    if cached is not None and cached[0] == identity:
        return cached[1]
    data = diskcache.read_file(directory, POOL_FILE, MAX_REPORT_BYTES)
    pool = EMPTY
    if data is None:
        pass
    elif len(data) > MAX_REPORT_BYTES or not data.startswith(POOL_MAGIC):
        log.warning("aia_ext: ignoring the intermediates pool %s (not a pool file "
                    "aia-ext wrote); run `aia-ext intermediates update` again", escape(path))
    else:
        try:
            pool = IntermediatesPool(certificates_in_bundle(data, MAX_ROWS))
        except BundleError as exc:
            log.warning("aia_ext: ignoring the intermediates pool %s: %s", escape(path),
                        escape(exc))
    with _lock:
        if len(_pools) >= diskcache.MAX_DIRECTORIES:
            _pools.clear()
        _pools[directory] = (identity, pool)
    if pool:
        log.debug("intermediates pool %s: %d certificates", escape(path), len(pool))
    return pool


def issuers_of(child: ParsedCertificate, options: Options) -> list[ParsedCertificate]:
    """``child``'s issuers from the preloaded pool of ``options.cache_dir``."""
    if options.cache_dir is None:
        return []
    return pool_in(options.cache_dir).issuers_of(child)


def update(directory: str, url: str, fetch: Callable[[str], bytes]) -> int:
    """Download the report at ``url`` with ``fetch``, check every row, and replace
    ``directory``'s pool file atomically; how many certificates it holds.

    Any failure (the download, a bad row, the directory) raises before the
    file is touched: the pool in use stays as it was.
    """
    data = fetch(url)
    certs = certificates_in_report(data)
    diskcache.write_file(directory, POOL_FILE, pool_file_bytes(certs, url))
    log.info("intermediates pool in %s: %d certificates from %s", escape(directory),
             len(certs), escape(url))
    return len(certs)
