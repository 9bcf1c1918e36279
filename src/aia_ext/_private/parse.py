"""Turn an AIA response body into certificates.

RFC 5280 section 4.2.2.1 says a caIssuers URL serves a DER certificate or a
"certs-only" CMS/PKCS#7 bundle; in practice CAs also serve PEM (Chromium and
.NET accept it too).  Accepted here:

- a DER certificate;
- PEM blocks (CERTIFICATE, X509 CERTIFICATE, PKCS7, CMS), each holding one of
  the DER forms;
- PKCS#7 SignedData in DER or BER, indefinite lengths included (RFC 5652
  section 5.1; some CAs emit BER, e.g. Amazon's ``.p7b`` files).

The envelope and the few certificate fields the chase needs are read by
der.py, not cryptography: its loader reaches BER PKCS#7 only through a
deprecated fallback, and importing it costs the first fetch ~50 ms.  OpenSSL
parses each certificate fully before it is used.  The body is at most
``max_response_bytes`` long, and every loop here is bounded by it or by the
constants below.
"""

from __future__ import annotations

import binascii
import logging
import re

from .der import DERError, ParsedCertificate, children, element, parse_certificate
from .errors import FetchError

__all__ = ["MAX_CERTIFICATES", "parse_certificates"]

log = logging.getLogger(__name__)

#: Certificates taken from one response; a real one carries one to three.
MAX_CERTIFICATES = 16
#: Elements examined in one PKCS#7 certificates set, parsable or not.
_MAX_ELEMENTS = 64

_PEM_BLOCK = re.compile(
    rb"-----BEGIN (CERTIFICATE|X509 CERTIFICATE|PKCS7|CMS)-----\r?\n"
    rb"(.*?)"
    rb"-----END \1-----",
    re.DOTALL,
)
# id-signedData, 1.2.840.113549.1.7.2, as a complete DER OBJECT IDENTIFIER.
_SIGNED_DATA_OID = bytes.fromhex("06092a864886f70d010702")

_SEQUENCE, _CONTEXT_0 = 0x30, 0xA0


def _pkcs7_certificate_blobs(der: bytes) -> list[bytes] | None:
    """The encoded certificates of a PKCS#7 SignedData, or None if it is not one."""
    try:
        tag, start, end, after = element(der, 0, len(der), indefinite=True)
        if tag != _SEQUENCE or after != len(der):
            return None
        outer = children(der, start, end, 1, indefinite=True)
        if len(outer) < 2 or der[outer[0][0] : outer[0][3]] != _SIGNED_DATA_OID:
            return None
        if outer[1][1] != _CONTEXT_0:
            raise DERError("content is not [0] EXPLICIT")
        signed = children(der, outer[1][2], outer[1][3], 2, indefinite=True)
        if not signed or signed[0][1] != _SEQUENCE:
            raise DERError("SignedData is not a SEQUENCE")
        # SignedData ::= SEQUENCE { version, digestAlgorithms, encapContentInfo,
        #                           certificates [0] IMPLICIT SET OF ... OPTIONAL, ...}
        fields = children(der, signed[0][2], signed[0][3], 3, indefinite=True)
        certs_field = next((f for f in fields[3:4] if f[1] == _CONTEXT_0), None)
        if certs_field is None:
            return []
        entries = children(der, certs_field[2], certs_field[3], 4, limit=_MAX_ELEMENTS,
                           indefinite=True)
    except DERError as exc:
        raise FetchError("parse error", f"malformed PKCS#7: {exc}") from None
    blobs = []
    for entry_start, entry_tag, _content_start, content_end in entries:
        if entry_tag == _SEQUENCE:  # other choices (attribute certs, ...) are skipped
            blobs.append(der[entry_start:content_end])
    return blobs


def _certificates_from_der(der: bytes) -> list[ParsedCertificate]:
    blobs = _pkcs7_certificate_blobs(der)
    if blobs is None:
        blobs = [der]
    certs: list[ParsedCertificate] = []
    for blob in blobs:
        if len(certs) >= MAX_CERTIFICATES:
            log.debug("ignoring certificates beyond the first %d", MAX_CERTIFICATES)
            break
        try:
            certs.append(parse_certificate(blob))
        except DERError as exc:
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


def parse_certificates(body: bytes) -> list[ParsedCertificate]:
    """All certificates in one AIA response, in the order served.

    Raises FetchError("parse error") when the body holds none.
    """
    stripped = body.lstrip()
    if stripped.startswith(b"-----BEGIN"):
        certs: list[ParsedCertificate] = []
        for der in _pem_ders(stripped):
            certs.extend(_certificates_from_der(der))
    elif body[:1] == b"\x30":
        certs = _certificates_from_der(body)
    else:
        certs = []
    if not certs:
        raise FetchError("parse error", "no certificate in the response")
    return certs[:MAX_CERTIFICATES]
