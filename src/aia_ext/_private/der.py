"""Just enough ASN.1 to chase issuers: read a certificate's names, notAfter and caIssuers.

The handshake path needs a few fields of a certificate (RFC 5280 section
4.1): issuer, subject, notAfter, the caIssuers URIs of the Authority
Information Access extension (section 4.2.2.1) and the key identifiers
(sections 4.2.1.1 and 4.2.1.2) that index the intermediates pool.  Reading them here instead of
through cryptography keeps cryptography's ~50 ms import off the first
handshake that needs a fetch; OpenSSL parses every certificate fully before
it is used (aia_ext_x509_new), and verification is OpenSSL's alone.

Everything is attacker input: every read is bounds-checked by ``element()``,
nesting is limited, and anything unexpected raises DERError (a ValueError).
The reader is fuzzed (fuzz/fuzz_aia.py) and checked against cryptography on
real certificates (tests/test_der.py).
"""

from __future__ import annotations

import functools
import re
from typing import NamedTuple

#: Nesting depth followed; a certificate's AIA URI sits at depth 8.
MAX_DEPTH = 12

_SEQUENCE, _SET, _OID, _CONTEXT_0, _CONTEXT_3, _OCTETS = 0x30, 0x31, 0x06, 0xA0, 0xA3, 0x04
_URI = 0x86  # GeneralName uniformResourceIdentifier [6] IMPLICIT IA5String
_UTC_TIME, _GENERALIZED_TIME = 0x17, 0x18
# id-pe-authorityInfoAccess (1.3.6.1.5.5.7.1.1) and id-ad-caIssuers (1.3.6.1.5.5.7.48.2)
_AIA = bytes.fromhex("2b06010505070101")
_CA_ISSUERS = bytes.fromhex("2b06010505073002")
# id-ce-subjectKeyIdentifier (2.5.29.14), id-ce-authorityKeyIdentifier (2.5.29.35)
_SKI, _AKI = bytes.fromhex("551d0e"), bytes.fromhex("551d23")
_CONTEXT_0_PRIMITIVE = 0x80


class DERError(ValueError):
    """The bytes are not the structure expected."""


def element(buf: bytes, pos: int, end: int, depth: int = 0,
            indefinite: bool = False) -> tuple[int, int, int, int]:
    """Read one BER/DER element at ``pos``: (tag, content start, content end, next).

    Single-byte tags and definite lengths of up to four bytes; indefinite
    lengths (X.690 section 8.1.3.6) on constructed elements only when
    ``indefinite`` is allowed (BER PKCS#7), in which case the end is found by
    walking the children.
    """
    if depth > MAX_DEPTH:
        raise DERError("nesting too deep")
    if pos + 2 > end:
        raise DERError("truncated element")
    tag = buf[pos]
    if tag & 0x1F == 0x1F:
        raise DERError("multi-byte tags are not used here")
    first = buf[pos + 1]
    pos += 2
    if first == 0x80:
        if not indefinite or not tag & 0x20:
            raise DERError("indefinite length not allowed here")
        child = pos
        while True:
            if child + 2 > end:
                raise DERError("missing end-of-contents")
            if buf[child] == 0 and buf[child + 1] == 0:
                return tag, pos, child, child + 2
            child = element(buf, child, end, depth + 1, indefinite)[3]
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or pos + count > end:
            raise DERError("bad length")
        length = int.from_bytes(buf[pos : pos + count], "big")
        pos += count
    if pos + length > end:
        raise DERError("length beyond the data")
    return tag, pos, pos + length, pos + length


def children(buf: bytes, start: int, end: int, depth: int, limit: int = 256,
             indefinite: bool = False) -> list[tuple[int, int, int, int]]:
    """The elements inside [start, end): (element start, tag, content start, content end)."""
    out: list[tuple[int, int, int, int]] = []
    pos = start
    while pos < end:
        if len(out) >= limit:
            raise DERError("too many elements")
        tag, content, content_end, after = element(buf, pos, end, depth, indefinite)
        out.append((pos, tag, content, content_end))
        pos = after
    return out


class ParsedCertificate(NamedTuple):
    """The fields AIA chasing needs, plus the DER it was read from."""

    der: bytes
    issuer: bytes  # the issuer Name, DER (whole element)
    subject: bytes  # the subject Name, DER
    not_after: float  # POSIX time
    ca_issuers: tuple[str, ...]
    subject_key_id: bytes | None = None  # RFC 5280 4.2.1.2
    authority_key_id: bytes | None = None  # its keyIdentifier, RFC 5280 4.2.1.1

    @property
    def subject_text(self) -> str:
        return name_to_string(self.subject)

    @property
    def issuer_text(self) -> str:
        return name_to_string(self.issuer)


def _time(buf: bytes, tag: int, start: int, end: int) -> float:
    text = buf[start:end].decode("ascii", "replace")
    if tag == _UTC_TIME and re.fullmatch(r"\d{12}Z", text):
        year = int(text[:2])
        year += 2000 if year < 50 else 1900  # RFC 5280 section 4.1.2.5.1
        rest = text[2:]
    elif tag == _GENERALIZED_TIME and re.fullmatch(r"\d{14}Z", text):
        year, rest = int(text[:4]), text[4:]
    else:
        raise DERError("bad time")
    month, day, hour, minute, second = (int(rest[i : i + 2]) for i in range(0, 10, 2))
    if not (1 <= month <= 12 and 1 <= day <= 31 and hour < 24 and minute < 60 and second < 61):
        raise DERError("bad time")
    return float(_days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second)


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 in the proleptic Gregorian calendar.

    The usual era-based formula; here instead of calendar.timegm, whose
    module costs ~5 ms of import on the first fetch.
    """
    year -= month <= 2
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146097 + day_of_era - 719468


class _Extensions(NamedTuple):
    ca_issuers: tuple[str, ...]
    subject_key_id: bytes | None
    authority_key_id: bytes | None


def _extensions(buf: bytes, start: int, end: int) -> _Extensions:
    """caIssuers URIs and key identifiers from the content of the [3] extensions element."""
    (_, tag, seq_start, seq_end), *rest = children(buf, start, end, 3) or [(0, 0, 0, 0)]
    if tag != _SEQUENCE or rest:
        raise DERError("extensions are not one SEQUENCE")
    urls: tuple[str, ...] = ()
    ski = aki = None
    for _, ext_tag, ext_start, ext_end in children(buf, seq_start, seq_end, 4):
        if ext_tag != _SEQUENCE:
            raise DERError("extension is not a SEQUENCE")
        fields = children(buf, ext_start, ext_end, 5, limit=3)
        if not fields or fields[0][1] != _OID:
            continue
        oid = buf[fields[0][2] : fields[0][3]]
        value = fields[-1]
        if oid not in (_AIA, _SKI, _AKI):
            continue
        if value[1] != _OCTETS:
            raise DERError("extension value is not an OCTET STRING")
        inner = element(buf, value[2], value[3], 6)
        if inner[3] != value[3]:
            raise DERError("extension value is not one element")
        if oid == _SKI:
            # SubjectKeyIdentifier ::= KeyIdentifier (OCTET STRING), RFC 5280 4.2.1.2
            if inner[0] == _OCTETS:
                ski = buf[inner[1] : inner[2]]
        elif oid == _AKI:
            # AuthorityKeyIdentifier ::= SEQUENCE { keyIdentifier [0] IMPLICIT ... }
            if inner[0] == _SEQUENCE:
                parts = children(buf, inner[1], inner[2], 7, limit=3)
                if parts and parts[0][1] == _CONTEXT_0_PRIMITIVE:
                    aki = buf[parts[0][2] : parts[0][3]]
        else:
            if inner[0] != _SEQUENCE:
                raise DERError("AIA is not one SEQUENCE")
            found = []
            for _, ad_tag, ad_start, ad_end in children(buf, inner[1], inner[2], 7):
                if ad_tag != _SEQUENCE:
                    raise DERError("AccessDescription is not a SEQUENCE")
                pair = children(buf, ad_start, ad_end, 8, limit=2)
                if len(pair) != 2 or pair[0][1] != _OID:
                    raise DERError("bad AccessDescription")
                method, location = pair
                if buf[method[2] : method[3]] == _CA_ISSUERS and location[1] == _URI:
                    found.append(buf[location[2] : location[3]].decode("latin-1"))
            urls = tuple(found)
    return _Extensions(urls, ski, aki)


def parse_certificate(der: bytes) -> ParsedCertificate:
    """Read issuer, subject, notAfter and caIssuers from a DER certificate."""
    tag, start, end, after = element(der, 0, len(der))
    if tag != _SEQUENCE or after != len(der):
        raise DERError("not one DER SEQUENCE")
    parts = children(der, start, end, 1, limit=3)
    if len(parts) != 3 or parts[0][1] != _SEQUENCE:
        raise DERError("not a Certificate")
    fields = children(der, parts[0][2], parts[0][3], 2, limit=10)
    if fields and fields[0][1] == _CONTEXT_0:  # version [0] EXPLICIT, absent for v1
        version = der[fields[0][2] : fields[0][3]]
        if version not in (b"\x02\x01\x00", b"\x02\x01\x01", b"\x02\x01\x02"):
            raise DERError("version is not v1, v2 or v3")
        fields = fields[1:]
    if len(fields) < 6:
        raise DERError("TBSCertificate too short")
    serial, algorithm, issuer, validity, subject = fields[:5]
    if serial[1] != 0x02 or algorithm[1] != _SEQUENCE or issuer[1] != _SEQUENCE \
            or validity[1] != _SEQUENCE or subject[1] != _SEQUENCE:
        raise DERError("unexpected TBSCertificate layout")
    times = children(der, validity[2], validity[3], 3, limit=2)
    if len(times) != 2:
        raise DERError("bad Validity")
    not_after = _time(der, times[1][1], times[1][2], times[1][3])
    extensions = _Extensions((), None, None)
    for _, field_tag, field_start, field_end in fields[6:]:
        if field_tag == _CONTEXT_3:
            extensions = _extensions(der, field_start, field_end)
    return ParsedCertificate(der, der[issuer[0] : issuer[3]], der[subject[0] : subject[3]],
                             not_after, extensions.ca_issuers, extensions.subject_key_id,
                             extensions.authority_key_id)


# ---- Names, for matching and for people ----------------------------------

# RFC 4514 section 3 short names (as cryptography and OpenSSL print them).
_SHORT_NAMES = {
    "2.5.4.3": "CN", "2.5.4.7": "L", "2.5.4.8": "ST", "2.5.4.10": "O", "2.5.4.11": "OU",
    "2.5.4.6": "C", "2.5.4.9": "STREET", "0.9.2342.19200300.100.1.25": "DC",
    "0.9.2342.19200300.100.1.1": "UID",
}
_TEXT = {0x0C: "utf-8", 0x13: "ascii", 0x16: "ascii", 0x12: "ascii", 0x1A: "ascii",
         0x14: "latin-1", 0x1E: "utf-16-be", 0x1C: "utf-32-be"}


def _oid_text(raw: bytes) -> str:
    if not raw:
        raise DERError("empty OID")
    arcs, value = [], 0
    for byte in raw:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    if raw[-1] & 0x80:
        raise DERError("truncated OID")
    first = min(arcs[0] // 40, 2)
    return ".".join(str(a) for a in [first, arcs[0] - 40 * first, *arcs[1:]])


def _attributes(name_der: bytes) -> list[list[tuple[bytes, int, bytes]]]:
    """RDNs in order, each a list of (type OID bytes, value tag, value bytes)."""
    tag, start, end, _ = element(name_der, 0, len(name_der))
    if tag != _SEQUENCE:
        raise DERError("Name is not a SEQUENCE")
    rdns = []
    for _, rdn_tag, rdn_start, rdn_end in children(name_der, start, end, 1, limit=64):
        if rdn_tag != _SET:
            raise DERError("RDN is not a SET")
        rdn = []
        for _, atv_tag, atv_start, atv_end in children(name_der, rdn_start, rdn_end, 2, 16):
            pair = children(name_der, atv_start, atv_end, 3, limit=2)
            if atv_tag != _SEQUENCE or len(pair) != 2 or pair[0][1] != _OID:
                raise DERError("bad AttributeTypeAndValue")
            rdn.append((name_der[pair[0][2] : pair[0][3]], pair[1][1],
                        name_der[pair[1][2] : pair[1][3]]))
        rdns.append(rdn)
    return rdns


def _value_text(tag: int, raw: bytes) -> str | None:
    encoding = _TEXT.get(tag)
    if encoding is None:
        return None
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError:
        return None


def _escape(value: str) -> str:
    # RFC 4514 section 2.4.
    out = "".join("\\" + ch if ch in ',+"\\<>;' else ch for ch in value)
    if out.startswith(("#", " ")):
        out = "\\" + out
    if out.endswith(" ") and len(out) > 1:
        out = out[:-1] + "\\ "
    return out.replace("\0", "\\00")


def name_to_string(name_der: bytes) -> str:
    """An RFC 4514 string, most specific RDN first (``CN=...,O=...,C=...``)."""
    try:
        parts = []
        for rdn in reversed(_attributes(name_der)):
            atoms = []
            for oid, tag, raw in rdn:
                dotted = _oid_text(oid)
                text = _value_text(tag, raw)
                value = _escape(text) if text is not None else "#" + raw.hex()
                atoms.append(f"{_SHORT_NAMES.get(dotted, dotted)}={value}")
            parts.append("+".join(atoms))
    except DERError:  # a bad OID too (found by fuzz/fuzz_aia.py)
        return "(unreadable name)"
    return ",".join(parts)


#: Names longer than this are canonicalised every time rather than cached, so
#: that the cache's memory stays bounded (4,096 x 1 KiB) whatever peers send.
_CACHED_NAME_BYTES = 1024


def _canonical(name_der: bytes) -> tuple[tuple[tuple[bytes, str], ...], ...]:
    # Cached: path building compares the same few names on every handshake
    # (issue 13 measured canonicalisation as the fallback's largest cost).
    if len(name_der) <= _CACHED_NAME_BYTES:
        return _canonical_cached(name_der)
    return _canonical_form(name_der)


@functools.lru_cache(maxsize=4096)
def _canonical_cached(name_der: bytes) -> tuple[tuple[tuple[bytes, str], ...], ...]:
    return _canonical_form(name_der)


def _canonical_form(name_der: bytes) -> tuple[tuple[tuple[bytes, str], ...], ...]:
    # Close to OpenSSL's canonical name encoding (x509_name_canon): string
    # values compared case-insensitively with runs of spaces folded.
    out = []
    for rdn in _attributes(name_der):
        atoms = []
        for oid, tag, raw in rdn:
            text = _value_text(tag, raw)
            key = " ".join(text.split()).casefold() if text is not None else raw.hex()
            atoms.append((oid, key))
        out.append(tuple(sorted(atoms)))
    return tuple(out)


def name_key(name_der: bytes) -> object:
    """A hashable key under which equal names (as ``names_match`` decides) meet."""
    try:
        return _canonical(name_der)
    except DERError:
        return name_der


def names_match(a: bytes, b: bytes) -> bool:
    """Whether two DER Names are the same name (bytes, or canonically)."""
    if a == b:
        return True
    try:
        return _canonical(a) == _canonical(b)
    except DERError:
        return False
