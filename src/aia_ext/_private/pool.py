"""The intermediates pool: known certificates, untrusted, indexed for lookups in constant time.

``intermediates=`` supplies certificates an operator knows are needed (an
internal CA's issuing certificate, a preloaded set of public intermediates).
They are tried before any fetch and, like fetched ones, are only ever
untrusted chain material (docs/design.md, invariant 1).  A pool may hold
thousands (Mozilla's preload set is ~1,700), so the issuer of a certificate
is found through two indexes, not a scan:

- by subject key identifier, when the child names its issuer's key
  (authorityKeyIdentifier, RFC 5280 section 4.2.1.1): exactly the key OpenSSL
  will accept (X509_check_issued);
- else by issuer name, compared as OpenSSL compares names (case and spaces
  folded).
"""

from __future__ import annotations

from collections.abc import Iterable

TYPE_CHECKING = False  # typing's, without importing typing (~3 ms)
if TYPE_CHECKING:
    from typing import TypeVar

if TYPE_CHECKING:
    from .der import ParsedCertificate

#: der.py (~2 ms of import) loads with the first certificate indexed or
#: looked up: ``import aia_ext`` makes only the empty pool (options.EMPTY).

#: Levels followed upwards through the pool from one certificate.
MAX_LEVELS = 8


if TYPE_CHECKING:
    _K = TypeVar("_K")


def _drop(index: dict[_K, list[ParsedCertificate]], key: _K, der: bytes) -> None:
    bucket = index.get(key)
    if bucket is not None:
        bucket[:] = [c for c in bucket if c.der != der]
        if not bucket:
            del index[key]


class IssuerIndex:
    """Certificates indexed by subject key identifier and by subject name.

    Mutable (the learned intermediates add and drop entries); not locked:
    its owner serialises access.
    """

    __slots__ = ("_by_key_id", "_by_subject")

    def __init__(self) -> None:
        self._by_subject: dict[object, list[ParsedCertificate]] = {}
        self._by_key_id: dict[bytes, list[ParsedCertificate]] = {}

    def add(self, cert: ParsedCertificate) -> None:
        from .der import name_key

        self._by_subject.setdefault(name_key(cert.subject), []).append(cert)
        if cert.subject_key_id is not None:
            self._by_key_id.setdefault(cert.subject_key_id, []).append(cert)

    def remove(self, cert: ParsedCertificate) -> None:
        from .der import name_key

        _drop(self._by_subject, name_key(cert.subject), cert.der)
        if cert.subject_key_id is not None:
            _drop(self._by_key_id, cert.subject_key_id, cert.der)

    def clear(self) -> None:
        self._by_subject.clear()
        self._by_key_id.clear()

    def direct_issuers(self, child: ParsedCertificate) -> list[ParsedCertificate]:
        """The certificates that may have issued ``child``."""
        from .der import name_key, names_match

        if child.authority_key_id is not None:
            by_key = self._by_key_id.get(child.authority_key_id)
            if by_key:
                return [c for c in by_key if names_match(c.subject, child.issuer)]
        return [c for c in self._by_subject.get(name_key(child.issuer), ())
                if child.authority_key_id is None or c.subject_key_id in
                (None, child.authority_key_id)]

    def issuers_of(self, child: ParsedCertificate) -> list[ParsedCertificate]:
        """``child``'s issuers, and theirs, as far as names connect."""
        from .der import names_match

        chosen: list[ParsedCertificate] = []
        seen = {child.der}
        current = [child]
        for _level in range(MAX_LEVELS):
            found = [c for parent in current for c in self.direct_issuers(parent)
                     if c.der not in seen]
            if not found:
                break
            chosen.extend(found)
            seen.update(c.der for c in found)
            current = [c for c in found if not names_match(c.issuer, c.subject)]
        return chosen


if TYPE_CHECKING:
    _Certificates = tuple[ParsedCertificate, ...]
else:
    _Certificates = tuple


class IntermediatesPool(_Certificates):
    """A tuple of parsed certificates, with indexes by subject and key identifier."""

    _index: IssuerIndex

    def __new__(cls, certificates: Iterable[ParsedCertificate] = ()) -> IntermediatesPool:
        pool = super().__new__(cls, dict.fromkeys(certificates))  # duplicates once
        pool._index = IssuerIndex()
        for cert in pool:
            pool._index.add(cert)
        return pool

    def direct_issuers(self, child: ParsedCertificate) -> list[ParsedCertificate]:
        """The certificates that may have issued ``child``."""
        return self._index.direct_issuers(child)

    def issuers_of(self, child: ParsedCertificate) -> list[ParsedCertificate]:
        """``child``'s issuers from the pool, and theirs, as far as names connect."""
        return self._index.issuers_of(child)


EMPTY = IntermediatesPool()
