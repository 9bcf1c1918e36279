"""Turn an AIA response body into certificates.

RFC 5280 section 4.2.2.1 says a caIssuers URL serves a DER certificate or a
"certs-only" CMS/PKCS#7 bundle; in practice CAs also serve PEM (Chromium and
.NET accept it too).  Accepted here:

- a DER certificate;
- PEM blocks (CERTIFICATE, X509 CERTIFICATE, PKCS7, CMS), each holding one of
  the DER forms;
- PKCS#7 SignedData in DER or BER, indefinite lengths included (RFC 5652
  section 5.1; some CAs emit BER, e.g. Amazon's ``.p7b`` files).

The PKCS#7 envelope is walked by the small BER reader below rather than by
cryptography's loader: that loader only reaches BER through a deprecated
fallback in recent releases, and not at all in the release PyPy can install.
Certificates themselves are DER by definition (they are signed) and are parsed
by cryptography.  The body is at most ``max_response_bytes`` long, and every
loop here is bounded by it or by the constants below.
"""

from __future__ import annotations

import binascii
import logging
import re
from typing import TYPE_CHECKING

from .errors import FetchError

if TYPE_CHECKING:
    from cryptography.x509 import Certificate

__all__ = ["MAX_CERTIFICATES", "parse_certificates"]

log = logging.getLogger(__name__)

#: Certificates taken from one response; a real one carries one to three.
MAX_CERTIFICATES = 16
#: Elements examined in one PKCS#7 certificates set, parsable or not.
_MAX_ELEMENTS = 64
#: Nesting depth the BER reader follows (ContentInfo is four levels deep).
_MAX_DEPTH = 8

_PEM_BLOCK = re.compile(
    rb"-----BEGIN (CERTIFICATE|X509 CERTIFICATE|PKCS7|CMS)-----\r?\n"
    rb"(.*?)"
    rb"-----END \1-----",
    re.DOTALL,
)
# id-signedData, 1.2.840.113549.1.7.2, as a complete DER OBJECT IDENTIFIER.
_SIGNED_DATA_OID = bytes.fromhex("06092a864886f70d010702")

_SEQUENCE, _SET, _CONTEXT_0 = 0x30, 0x31, 0xA0


class _BERError(ValueError):
    pass


def _element(buf: bytes, pos: int, end: int, depth: int) -> tuple[int, int, int, int]:
    """Read one BER element at ``pos``: (tag, content start, content end, next).

    Only what PKCS#7 needs: single-byte tags, definite lengths of up to four
    bytes, and indefinite lengths (X.690 section 8.1.3.6) on constructed
    elements, whose end is found by walking their children.
    """
    if depth > _MAX_DEPTH:
        raise _BERError("nesting too deep")
    if pos + 2 > end:
        raise _BERError("truncated element")
    tag = buf[pos]
    if tag & 0x1F == 0x1F:
        raise _BERError("multi-byte tags are not used in PKCS#7")
    first = buf[pos + 1]
    pos += 2
    if first == 0x80:
        if not tag & 0x20:
            raise _BERError("indefinite length on a primitive element")
        child = pos
        while True:
            if child + 2 > end:
                raise _BERError("missing end-of-contents")
            if buf[child] == 0 and buf[child + 1] == 0:
                return tag, pos, child, child + 2
            child = _element(buf, child, end, depth + 1)[3]
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count > 4 or pos + count > end:
            raise _BERError("bad length")
        length = int.from_bytes(buf[pos : pos + count], "big")
        pos += count
    if pos + length > end:
        raise _BERError("length beyond the data")
    return tag, pos, pos + length, pos + length


def _children(buf: bytes, start: int, end: int, depth: int) -> list[tuple[int, int, int, int]]:
    out: list[tuple[int, int, int, int]] = []
    pos = start
    while pos < end and len(out) < _MAX_ELEMENTS:
        element = _element(buf, pos, end, depth)
        out.append((pos, *element[:3]))
        pos = element[3]
    return out


def _pkcs7_certificate_blobs(der: bytes) -> list[bytes] | None:
    """The encoded certificates of a PKCS#7 SignedData, or None if it is not one."""
    try:
        tag, start, end, after = _element(der, 0, len(der), 0)
        if tag != _SEQUENCE or after != len(der):
            return None
        outer = _children(der, start, end, 1)
        if len(outer) < 2 or der[outer[0][0] : outer[0][3]] != _SIGNED_DATA_OID:
            return None
        if outer[1][1] != _CONTEXT_0:
            raise _BERError("content is not [0] EXPLICIT")
        signed = _children(der, outer[1][2], outer[1][3], 2)
        if not signed or signed[0][1] != _SEQUENCE:
            raise _BERError("SignedData is not a SEQUENCE")
        # SignedData ::= SEQUENCE { version, digestAlgorithms, encapContentInfo,
        #                           certificates [0] IMPLICIT SET OF ... OPTIONAL, ...}
        fields = _children(der, signed[0][2], signed[0][3], 3)
        certs_field = next((f for f in fields[3:4] if f[1] == _CONTEXT_0), None)
        if certs_field is None:
            return []
        entries = _children(der, certs_field[2], certs_field[3], 4)
    except _BERError as exc:
        raise FetchError("parse error", f"malformed PKCS#7: {exc}") from None
    blobs = []
    for entry_start, entry_tag, _content_start, content_end in entries:
        if entry_tag == _SEQUENCE:  # other choices (attribute certs, ...) are skipped
            blobs.append(der[entry_start:content_end])
    return blobs


def _certificates_from_der(der: bytes) -> list[Certificate]:
    from cryptography import x509

    blobs = _pkcs7_certificate_blobs(der)
    if blobs is None:
        blobs = [der]
    certs: list[Certificate] = []
    for blob in blobs:
        if len(certs) >= MAX_CERTIFICATES:
            log.debug("ignoring certificates beyond the first %d", MAX_CERTIFICATES)
            break
        try:
            certs.append(x509.load_der_x509_certificate(blob))
        except Exception as exc:  # noqa: BLE001 - hostile bytes: ValueError, InvalidVersion, ...
            # cryptography raises more than ValueError on malformed input
            # (x509.InvalidVersion is not one); found by fuzz/fuzz_parse.py.
            log.debug("skipping an element that is not a DER certificate: %s", exc)
    return certs


def _pem_ders(body: bytes) -> list[bytes]:
    ders = []
    for match in _PEM_BLOCK.finditer(body):
        try:
            ders.append(binascii.a2b_base64(b"".join(match.group(2).split())))
        except binascii.Error:
            log.debug("skipping a PEM block whose base64 does not decode")
        if len(ders) >= MAX_CERTIFICATES:
            break
    return ders


def parse_certificates(body: bytes) -> list[Certificate]:
    """All certificates in one AIA response, in the order served.

    Raises FetchError("parse error") when the body holds none.
    """
    stripped = body.lstrip()
    if stripped.startswith(b"-----BEGIN"):
        certs: list[Certificate] = []
        for der in _pem_ders(stripped):
            certs.extend(_certificates_from_der(der))
    elif body[:1] == b"\x30":
        certs = _certificates_from_der(body)
    else:
        certs = []
    if not certs:
        raise FetchError("parse error", "no certificate in the response")
    return certs[:MAX_CERTIFICATES]
