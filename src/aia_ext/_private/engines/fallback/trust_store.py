"""The fallback engine's trust store: the context's CA certificates, read as OpenSSL would.

``get_ca_certs()`` lists what was loaded from files and data, but a capath
(OpenSSL's hashed directory) is looked up lazily by subject hash and never
listed, and neither are the default verify paths until used.  These are read
here from the trust sources the context recorded.  Imported on the fallback
engine's first handshake (it loads cryptography), never by ``import aia_ext``.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import ssl
import threading
import warnings
from typing import Any

from cryptography import x509
from cryptography.x509.verification import Store

from ...bundle import pem_blocks
from ...der import ParsedCertificate, name_key, parse_certificate

log = logging.getLogger(__name__)

#: Directory entries read from a capath (hashed CA directory) at most.
MAX_CAPATH_FILES = 10_000
#: Bytes read from one CA file at most, and certificates taken from it.
MAX_CA_FILE = 16 * 1024 * 1024
MAX_CA_FILE_CERTIFICATES = 10_000
#: CA files whose certificates are remembered (keyed by path, mtime and size).
MAX_CACHED_FILES = MAX_CAPATH_FILES + 16


def load_certificate(der: bytes) -> Any:
    """cryptography's Certificate for ``der``, without its deprecation warnings.

    These are other people's certificates, which OpenSSL accepts; some real
    ones (a root with a non-positive serial) make cryptography warn.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return x509.load_der_x509_certificate(der)


_files_lock = threading.Lock()
_files_cache: dict[tuple[str, float, int], tuple[bytes, ...]] = {}


def _certificates_in_file(path: str) -> tuple[bytes, ...]:
    """DER certificates of one PEM/DER file, cached by path, mtime and size."""
    try:
        stat = os.stat(path)
    except OSError:
        return ()
    key = (path, stat.st_mtime, stat.st_size)
    with _files_lock:
        cached = _files_cache.get(key)
    if cached is not None:
        return cached
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_CA_FILE)
    except OSError:
        return ()
    ders = tuple(pem_blocks(data, MAX_CA_FILE_CERTIFICATES) if b"-----BEGIN" in data
                 else [data])
    with _files_lock:
        if len(_files_cache) >= MAX_CACHED_FILES:
            _files_cache.clear()  # files changed or a huge capath: read them again
        _files_cache[key] = ders
    return ders


def _certificates_in_directory(path: str) -> list[bytes]:
    # A capath is OpenSSL's hashed directory (`openssl rehash`): OpenSSL looks
    # certificates up lazily by subject hash, so get_ca_certs() never lists
    # them.  The fallback reads the directory's files once instead.
    ders: list[bytes] = []
    try:
        with os.scandir(path) as entries:
            for count, entry in enumerate(entries):
                if count >= MAX_CAPATH_FILES:
                    break
                if entry.is_file():
                    ders.extend(_certificates_in_file(entry.path))
    except OSError:
        pass
    return ders


def trust_anchors(context: ssl.SSLContext, default_paths: bool,
                  capaths: tuple[str, ...]) -> list[bytes]:
    """The context's CA certificates (DER): loaded ones, default paths, capaths."""
    ders = list(context.get_ca_certs(binary_form=True))
    directories = list(capaths)
    if default_paths:
        paths = ssl.get_default_verify_paths()
        if paths.cafile:
            ders.extend(_certificates_in_file(paths.cafile))
        if paths.capath:
            directories.append(paths.capath)
    for directory in directories:
        ders.extend(_certificates_in_directory(directory))
    return list(dict.fromkeys(ders))


class TrustStore:
    """One trust set, parsed once: anchors indexed by subject, and cryptography's Store.

    ``generation`` is unique per build, so a verdict cached for one store is
    never found for another (verdicts.py).
    """

    __slots__ = ("anchor_ders", "by_subject", "generation", "loaded", "store")

    _generations = itertools.count(1)

    def __init__(self, ders: tuple[bytes, ...]) -> None:
        self.generation = next(self._generations)
        self.by_subject: dict[object, list[ParsedCertificate]] = {}
        self.loaded: dict[bytes, Any] = {}
        for der in ders:
            try:
                parsed = parse_certificate(der)
                self.loaded[der] = load_certificate(der)
            except Exception:  # noqa: BLE001 - DERError or cryptography's errors
                # OpenSSL would not have loaded it either (get_ca_certs lists
                # what it holds): a root we cannot read anchors nothing.
                log.debug("fallback: skipping an unreadable trust anchor")
                continue
            self.by_subject.setdefault(name_key(parsed.subject), []).append(parsed)
        self.anchor_ders = frozenset(self.loaded)
        self.store = Store(list(self.loaded.values())) if self.loaded else None

    def candidates(self, issuer_name: bytes) -> list[ParsedCertificate]:
        """Anchors whose subject is this name (canonically): the only possible issuers."""
        return self.by_subject.get(name_key(issuer_name), [])


@functools.lru_cache(maxsize=16)
def _build(ders: tuple[bytes, ...]) -> TrustStore:
    # Shared by contexts that trust the same set (every create_default_context()
    # on certifi): ~140 roots parse in milliseconds, once.
    return TrustStore(ders)


#: Where a context keeps its built store, with the stamp it was built for.
_STORE_KEY = "_aia_trust_store"


def _stamp(context: ssl.SSLContext, default_paths: bool,
           capaths: tuple[str, ...]) -> tuple[object, ...]:
    """What the context's trust set depends on, cheap to read on every handshake.

    OpenSSL's store only grows (loading a certificate twice keeps one), so its
    counts change whenever the loaded set does; directories are read by us, so
    their modification times stand for their contents, as OpenSSL's by_dir
    lookup sees new files.
    """
    paths = list(capaths)
    if default_paths:
        defaults = ssl.get_default_verify_paths()
        paths += [p for p in (defaults.cafile, defaults.capath) if p]
    stamps: list[tuple[object, ...]] = []
    for path in paths:
        try:
            stat = os.stat(path)
        except OSError:
            stamps.append((path, None))
            continue
        stamps.append((path, stat.st_mtime_ns, stat.st_size))
    return (tuple(sorted(context.cert_store_stats().items())), default_paths, capaths,
            tuple(stamps))


def store_for(context: ssl.SSLContext, default_paths: bool,
              capaths: tuple[str, ...]) -> TrustStore:
    """The context's trust store, rebuilt only when its CA set changed (issue 13)."""
    stamp = _stamp(context, default_paths, capaths)
    attributes = getattr(context, "__dict__", None)
    if attributes is not None:
        cached = attributes.get(_STORE_KEY)
        if cached is not None and cached[0] == stamp:
            return cached[1]  # type: ignore[no-any-return]
    store = _build(tuple(trust_anchors(context, default_paths, capaths)))
    if attributes is not None:
        attributes[_STORE_KEY] = (stamp, store)  # one assignment: atomic for other threads
    return store
