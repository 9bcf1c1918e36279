"""Certificates out of bytes: DER, PEM, and PKCS#7 "certs-only" bundles.

RFC 5280 section 4.2.2.1 says a caIssuers URL serves a DER certificate or a
"certs-only" CMS/PKCS#7 bundle; in practice CAs also serve PEM (Chromium and
.NET accept it too), and users' intermediates files are PEM.  Accepted here:

- a DER certificate;
- PEM blocks (CERTIFICATE, X509 CERTIFICATE, PKCS7, CMS; RFC 7468), each
  holding one of the DER forms; text around the blocks is ignored;
- PKCS#7 SignedData in DER or BER, indefinite lengths included (RFC 5652
  section 5.1; some CAs emit BER, e.g. Amazon's ``.p7b`` files).

The envelope and the few certificate fields the chase needs are read by
der.py, not cryptography: its loader reaches BER PKCS#7 only through a
deprecated fallback, and importing it costs the first fetch ~50 ms.  OpenSSL
parses each certificate fully before it is used.

Everything here is attacker input and runs in time linear in its size: the
PEM reader makes one forward pass (a regular expression that searches for an
END marker from every BEGIN is quadratic on a flood of BEGIN lines), and
every loop is bounded by the input or by ``limit``.
"""

from __future__ import annotations

import binascii

from .der import DERError, ParsedCertificate, children, element, parse_certificate
from .logtext import escape, get_logger

log = get_logger(__name__)

#: Elements examined in one PKCS#7 certificates set, parsable or not.
MAX_PKCS7_ELEMENTS = 64

_PEM_LABELS = frozenset({b"CERTIFICATE", b"X509 CERTIFICATE", b"PKCS7", b"CMS"})
_MAX_LABEL = 32  # longer than any label above: what follows "-----BEGIN " is not one
_BEGIN, _END, _DASHES = b"-----BEGIN ", b"-----END ", b"-----"
# id-signedData, 1.2.840.113549.1.7.2, as a complete DER OBJECT IDENTIFIER.
_SIGNED_DATA_OID = bytes.fromhex("06092a864886f70d010702")
_SEQUENCE, _CONTEXT_0 = 0x30, 0xA0


class BundleError(ValueError):
    """The bytes hold no certificate; the message says what was found instead."""


#: BundleError's message when the bytes are simply not certificates.
NO_CERTIFICATE = "no certificate"


def pem_blocks(data: bytes, limit: int) -> list[bytes]:
    """The decoded contents of the certificate-bearing PEM blocks of ``data``, in order."""
    return [der for _label, der in labelled_pem_blocks(data, limit, _PEM_LABELS)]


def labelled_pem_blocks(data: bytes, limit: int,
                        labels: frozenset[bytes]) -> list[tuple[bytes, bytes]]:
    """(label, decoded contents) of the PEM blocks of ``data`` with one of ``labels``.

    A block runs from a BEGIN marker to the next END marker with the same
    label; a BEGIN before that END restarts it.  Blocks whose base64 does not
    decode are skipped.  At most ``limit`` blocks are returned.

    Linear in ``len(data)``: every search starts where the previous one
    stopped, and the position of the next END marker is remembered, so a
    flood of BEGIN markers before one distant END is not rescanned per BEGIN.
    """
    out: list[tuple[bytes, bytes]] = []
    pos, next_end = 0, -1
    while len(out) < limit:
        begin = data.find(_BEGIN, pos)
        if begin < 0:
            break
        label_start = begin + len(_BEGIN)
        label_end = data.find(_DASHES, label_start, label_start + _MAX_LABEL + len(_DASHES))
        if label_end < 0:
            pos = label_start
            continue
        label, body_start = data[label_start:label_end], label_end + len(_DASHES)
        if next_end < body_start:
            next_end = data.find(_END, body_start)
            if next_end < 0:
                break  # no END marker anywhere after this: nothing more to close
        restart = data.find(_BEGIN, body_start, next_end)
        if restart >= 0:
            pos = restart  # a BEGIN before this block's END: it starts over there
            continue
        pos = next_end + len(_END)
        if label not in labels or data[pos : pos + len(label) + 5] != label + _DASHES:
            continue
        try:
            out.append((label, binascii.a2b_base64(b"".join(data[body_start:next_end].split()))))
        except binascii.Error:
            log.debug("skipping a PEM block whose base64 does not decode")
    return out


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
        entries = children(der, certs_field[2], certs_field[3], 4, limit=MAX_PKCS7_ELEMENTS,
                           indefinite=True)
    except DERError as exc:
        raise BundleError(f"malformed PKCS#7: {exc}") from None
    blobs = []
    for entry_start, entry_tag, _content_start, content_end in entries:
        if entry_tag == _SEQUENCE:  # other choices (attribute certs, ...) are skipped
            blobs.append(der[entry_start:content_end])
    return blobs


def _certificates_from_der(der: bytes, limit: int) -> list[ParsedCertificate]:
    blobs = _pkcs7_certificate_blobs(der)
    if blobs is None:
        blobs = [der]
    certs: list[ParsedCertificate] = []
    for blob in blobs:
        if len(certs) >= limit:
            break
        try:
            certs.append(parse_certificate(blob))
        except DERError as exc:
            log.debug("skipping an element that is not a DER certificate: %s", escape(exc))
    return certs


def certificates_in_bundle(data: bytes, limit: int = 100_000) -> list[ParsedCertificate]:
    """Every certificate in ``data`` (DER, PEM or PKCS#7), in order, at most ``limit``.

    Raises BundleError when there is none.  Whether more than ``limit`` were
    present is the caller's question: ask for ``limit + 1`` to find out.
    """
    certs: list[ParsedCertificate] = []
    if data[:1] != b"\x30":  # not DER: PEM blocks, with any text around them
        for number, der in enumerate(pem_blocks(data, limit), 1):
            try:
                certs.extend(_certificates_from_der(der, limit - len(certs)))
            except BundleError as exc:
                # One damaged block (empty, truncated) costs itself only, not
                # the valid blocks around it (issue 26, item 10).
                log.debug("skipping PEM block %d: %s", number, escape(exc))
                continue
            if len(certs) >= limit:
                break
    else:
        certs = _certificates_from_der(data, limit)
    if not certs:
        raise BundleError(NO_CERTIFICATE)
    return certs[:limit]
