"""Learned intermediates: the intermediates of chains that verified, remembered (issue 23).

Firefox keeps the intermediates of every verified connection and uses them
to complete later chains that lack them; this is that mechanism.  Only the
intermediates of a *verified path* are learned (never a certificate the
server merely sent), only from a client verification that was required and
succeeded, and they are only ever untrusted chain material: the verifier
still decides (docs/design.md, invariant 1).

- In memory: process-wide, at most ``MAX_LEARNED`` certificates and
  ``MAX_LEARNED_BYTES`` of DER (none over ``MAX_LEARNED_DER``), least
  recently used dropped first, indexed like the intermediates pool (by
  subject key identifier and by name), so a lookup is constant time.
- On disk, when ``cache_dir`` is set: one disk-cache entry per subject name
  (diskcache.py: the same directory checks, atomic writes and size limits as
  fetched entries), read only when memory has no issuer, and used only for
  an issuer whose signature on the child checks out.
- The native engine decides "seen before" in C, from the SHA-1 OpenSSL
  already computed for each certificate, so a complete chain it has seen
  costs no call into Python (csrc/verify.c, aia_learn); this module keeps
  the certificates themselves.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from ..der import ParsedCertificate, name_key, parse_certificate
from ..logtext import escape, get_logger
from ..pool import IntermediatesPool, IssuerIndex

if TYPE_CHECKING:
    from ..options import Options

log = get_logger(__name__)

#: Learned certificates kept in memory (each its DER size plus ~70 bytes of fields
#: and index: 5.5 MiB at the bound for ECDSA intermediates, ~16 MiB for RSA ones;
#: benchmarks/run.py's learned_memory row measures it).
MAX_LEARNED = 10_000
#: And in bytes of DER: 10,000 certificates of a hostile private CA's 30 KB would
#: be 300 MB (issue 32, item 11).  Real intermediates are 1-2.5 KB.
MAX_LEARNED_BYTES = 16 * 1024 * 1024
#: A certificate larger than this is not learned (it is still verified, and can
#: still be fetched or sent): no public intermediate comes near it.
MAX_LEARNED_DER = 16 * 1024
#: Certificates kept on disk under one subject name (re-keyed CAs share names).
MAX_PER_NAME_ON_DISK = 8


class _Store:
    """The process-wide set of learned intermediates (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._certs: OrderedDict[bytes, ParsedCertificate] = OrderedDict()
        self._index = IssuerIndex()
        self._bytes = 0  # DER held

    def __contains__(self, der: object) -> bool:
        with self._lock:
            return der in self._certs

    def __len__(self) -> int:
        with self._lock:
            return len(self._certs)

    def held(self) -> int:
        """Bytes of DER held."""
        with self._lock:
            return self._bytes

    def add(self, cert: ParsedCertificate) -> bool:
        """Remember ``cert``; whether it was new."""
        if len(cert.der) > MAX_LEARNED_DER:
            return False
        with self._lock:
            if cert.der in self._certs:
                self._certs.move_to_end(cert.der)
                return False
            self._certs[cert.der] = cert
            self._bytes += len(cert.der)
            self._index.add(cert)
            while len(self._certs) > MAX_LEARNED or self._bytes > MAX_LEARNED_BYTES:
                self._drop(self._certs.popitem(last=False)[1])
            return True

    def _drop(self, cert: ParsedCertificate) -> None:
        self._index.remove(cert)
        self._bytes -= len(cert.der)

    def issuers_of(self, child: ParsedCertificate) -> list[ParsedCertificate]:
        """Unexpired learned issuers of ``child``.  An expired one is dropped: added
        first, it would make the chain fail as expired (10) instead of letting the
        fetch find its successor."""
        now = time.time()
        with self._lock:
            found = self._index.issuers_of(child)
            for cert in found:
                if cert.not_after <= now:
                    del self._certs[cert.der]
                    self._drop(cert)
                else:
                    self._certs.move_to_end(cert.der)
            return [c for c in found if c.not_after > now]

    def clear(self) -> None:
        with self._lock:
            self._certs.clear()
            self._index.clear()
            self._bytes = 0


store = _Store()


def learn(ders: Iterable[bytes], options: Options) -> int:
    """Remember the intermediates ``ders`` (DER) of a path that verified; how many were new.

    The caller passes the verified path's intermediates only: neither the
    leaf nor the trust anchor, nor anything else the server sent.
    """
    if not options.learn_intermediates:
        return 0
    new: list[ParsedCertificate] = []
    for der in ders:
        if der in store:
            continue
        if len(der) > MAX_LEARNED_DER:
            log.debug("learned intermediates: a certificate of %d bytes is not kept (over %d)",
                      len(der), MAX_LEARNED_DER)
            continue
        try:
            cert = parse_certificate(der)
        except ValueError as exc:  # OpenSSL read it; our reader cannot: not learned
            log.debug("learned intermediates: cannot read a certificate: %s", escape(exc))
            continue
        if store.add(cert):
            new.append(cert)
            log.debug("learned intermediate %s", escape(cert.subject_text))
    if new and options.cache_dir is not None:
        for cert in new:
            _store_on_disk(options.cache_dir, cert)
    return len(new)


def learn_path(path: Sequence[bytes], options: Options) -> int:
    """``learn`` the intermediates of a verified path (DER, leaf first, anchor last)."""
    return learn(path[1:-1], options) if len(path) > 2 else 0


def issuers_of(child: ParsedCertificate, options: Options) -> list[ParsedCertificate]:
    """Learned issuers of ``child``: memory first, then the disk cache if one is set."""
    if not options.learn_intermediates:
        return []
    found = store.issuers_of(child)
    if found or options.cache_dir is None:
        return found
    return _from_disk(options.cache_dir, child)


def disk_key(name: bytes) -> str:
    """The disk-cache key for learned certificates with subject ``name`` (DER)."""
    digest = hashlib.sha256(repr(name_key(name)).encode("utf-8", "backslashreplace"))
    return f"aia-ext-learned:{digest.hexdigest()}"


def _store_on_disk(directory: str, cert: ParsedCertificate) -> None:
    from . import diskcache  # opt-in: only when cache_dir is set

    key = disk_key(cert.subject)
    kept = [c.der for c in (diskcache.load(directory, key) or ()) if c.der != cert.der]
    diskcache.store(directory, key, [cert.der, *kept][:MAX_PER_NAME_ON_DISK])


def _from_disk(directory: str, child: ParsedCertificate) -> list[ParsedCertificate]:
    from . import diskcache  # opt-in: only when cache_dir is set

    certs = diskcache.load(directory, disk_key(child.issuer))
    if not certs:
        return []
    # A name is not a key: only a certificate whose signature on the child
    # checks out is an issuer (a planted file under the right name is not).
    issuers = [c for c in IntermediatesPool(certs).direct_issuers(child)
               if diskcache.issued_child(child.der, [c.der])]
    for cert in issuers:
        store.add(cert)
    if issuers:
        log.debug("learned intermediates: %d issuer(s) of %s from the disk cache",
                  len(issuers), escape(child.subject_text))
    return issuers
