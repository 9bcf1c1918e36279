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
import logging
import os
import ssl

from ...stdlib_ssl import TrustSources
from .openssl import Certificate, TrustSet, certificate

log = logging.getLogger(__name__)

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


#: Where a context keeps its built trust set, with the stamp it was built for.
_STORE_KEY = "_aia_trust_set"


def _directories(sources: TrustSources) -> tuple[str, ...]:
    directories = list(sources.capaths)
    if sources.default_paths:
        capath = ssl.get_default_verify_paths().capath
        if capath:
            directories.append(capath)
    return tuple(dict.fromkeys(directories))


def _stamp(context: ssl.SSLContext, sources: TrustSources,
           directories: tuple[str, ...]) -> tuple[object, ...]:
    """What the context's trust set depends on, cheap to read on every handshake.

    OpenSSL's store only grows (loading a certificate twice keeps one), so its
    counts change whenever the loaded set does; a directory's modification
    time stands for its contents, as OpenSSL's by_dir lookup sees new files.
    """
    stamps: list[tuple[object, ...]] = []
    for path in directories:
        try:
            stat = os.stat(path)
        except OSError:
            stamps.append((path, None))
            continue
        stamps.append((path, stat.st_mtime_ns, stat.st_size))
    return (tuple(sorted(context.cert_store_stats().items())), directories, len(sources.files),
            len(sources.certificates), tuple(stamps))


def trust_set_for(context: ssl.SSLContext, sources: TrustSources) -> TrustSet:
    """The context's trust set, rebuilt only when its CA set changed (issue 13)."""
    directories = _directories(sources)
    stamp = _stamp(context, sources, directories)
    attributes = getattr(context, "__dict__", None)
    if attributes is not None:
        cached = attributes.get(_STORE_KEY)
        if cached is not None and cached[0] == stamp:
            return cached[1]  # type: ignore[no-any-return]
    ders = tuple(dict.fromkeys([*context.get_ca_certs(binary_form=True), *sources.certificates]))
    trust = _build(ders, directories, tuple(sources.files))
    if attributes is not None:
        attributes[_STORE_KEY] = (stamp, trust)  # one assignment: atomic for other threads
    return trust
