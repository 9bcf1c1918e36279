"""The fallback engine's trust store: the context's trust material, in cryptography's OpenSSL.

``get_ca_certs()`` lists the certificates loaded into a context, but not how
OpenSSL finds the rest: a capath (OpenSSL's hashed directory) and the default
directory are looked up lazily by subject hash, and a CA file's CRLs and
trust settings are not listed at all.  The context records those sources as
they are loaded (stdlib_ssl.record_trust_sources); this module turns them into
a ``TrustSet`` for openssl.py, rebuilt only when the context's CA set changes.
Imported on the fallback engine's first verification, never by ``import aia_ext``.
"""

from __future__ import annotations

import functools
import itertools
import os
import ssl
import time
from typing import NamedTuple

from ...logtext import get_logger
from ...stdlib_ssl import TrustSources
from .openssl import Certificate, TrustSet, certificate

log = get_logger(__name__)

_generations = itertools.count(1)


@functools.lru_cache(maxsize=16)
def _build(ders: tuple[bytes, ...], directories: tuple[str, ...],
           files: tuple[bytes, ...]) -> TrustSet:
    # Shared by contexts that trust the same set (every create_default_context()
    # on certifi): ~140 roots parse in a few milliseconds, once.
    certificates: list[Certificate] = []
    for der in ders:
        try:
            certificates.append(certificate(der))
        except ValueError:
            # get_ca_certs() lists what the interpreter's OpenSSL holds; one
            # that cryptography's OpenSSL cannot read anchors nothing here.
            log.debug("fallback: skipping a trust anchor OpenSSL cannot read")
    return TrustSet(next(_generations), certificates, directories, files)


#: Where a context keeps its built trust set, with what it was built from.
_STORE_KEY = "_aia_trust_set"
#: Seconds between looks at the directories a trust set reads (issue 30, item 5).
RECHECK_SECONDS = 5.0


class _Built(NamedTuple):
    loaded: tuple[object, ...]  # what the context loaded: cheap to read every time
    directories: tuple[object, ...]  # the directories and their stamps: a system call each
    checked_at: float  # time.monotonic() of the directories' last look
    trust: TrustSet


def _directories(sources: TrustSources) -> tuple[str, ...]:
    directories = list(sources.capaths)
    if sources.default_paths:
        # What ssl.get_default_verify_paths() reads, without its isdir(): a
        # directory that is not there is stamped as missing below.
        parts = ssl._ssl.get_default_verify_paths()  # type: ignore[attr-defined]
        capath = os.environ.get(parts[2], parts[3])
        if capath:
            directories.append(capath)
    return tuple(dict.fromkeys(directories))


def _directory_stamps(directories: tuple[str, ...]) -> tuple[object, ...]:
    """A directory's modification time stands for its contents, as OpenSSL's by_dir
    lookup sees new files."""
    stamps: list[tuple[object, ...]] = []
    for path in directories:
        try:
            stat = os.stat(path)
        except OSError:
            stamps.append((path, None))
            continue
        stamps.append((path, stat.st_mtime_ns, stat.st_size))
    return tuple(stamps)


def trust_set_for(context: ssl.SSLContext, sources: TrustSources) -> TrustSet:
    """The context's trust set, rebuilt only when its CA set changed (issue 13).

    What was loaded into the context is compared on every verification (OpenSSL's
    store only grows, so its counts change whenever the loaded set does); the
    directories it reads lazily are looked at on disk at most every
    ``RECHECK_SECONDS``, so that a handshake on an event loop's thread makes no
    blocking system call (issue 30, item 5).
    """
    loaded = (tuple(sorted(context.cert_store_stats().items())), sources.default_paths,
              sources.capaths, len(sources.files), len(sources.certificates))
    directories = _directories(sources)
    attributes = getattr(context, "__dict__", None)
    built: _Built | None = attributes.get(_STORE_KEY) if attributes is not None else None
    now = time.monotonic()
    if (built is not None and built.directories[0] == directories
            and now - built.checked_at < RECHECK_SECONDS):
        if built.loaded == loaded:
            return built.trust
        stamps, checked_at = built.directories, built.checked_at
    else:
        stamps, checked_at = (directories, _directory_stamps(directories)), now
        if built is not None and built.loaded == loaded and built.directories == stamps:
            if attributes is not None:
                attributes[_STORE_KEY] = built._replace(checked_at=now)
            return built.trust
    ders = tuple(dict.fromkeys([*context.get_ca_certs(binary_form=True), *sources.certificates]))
    trust = _build(ders, directories, tuple(sources.files))
    if attributes is not None:
        # One assignment: atomic for other threads.
        attributes[_STORE_KEY] = _Built(loaded, stamps, checked_at, trust)
    return trust
