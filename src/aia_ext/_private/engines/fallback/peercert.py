"""``getpeercert()``'s dictionary for a certificate, built without OpenSSL.

Only for connections the fallback engine verified (context.py): _ssl
decodes the peer certificate only when OpenSSL itself verified it.  The
layout follows _ssl's (Modules/_ssl.c, _decode_certificate): RDN tuples with
OpenSSL's long names, subjectAltName pairs, and times as "%b %d %H:%M:%S %Y GMT".
"""

from __future__ import annotations

from typing import Any

from cryptography import x509
from cryptography.x509.oid import AuthorityInformationAccessOID as Method

# OpenSSL's long names (obj_dat.h) for the attributes certificates use.
_LONG_NAMES = {
    "2.5.4.3": "commonName", "2.5.4.6": "countryName", "2.5.4.7": "localityName",
    "2.5.4.8": "stateOrProvinceName", "2.5.4.10": "organizationName",
    "2.5.4.11": "organizationalUnitName", "2.5.4.5": "serialNumber",
    "2.5.4.9": "streetAddress", "2.5.4.17": "postalCode",
    "1.2.840.113549.1.9.1": "emailAddress", "0.9.2342.19200300.100.1.25": "domainComponent",
    "0.9.2342.19200300.100.1.1": "userId", "2.5.4.15": "businessCategory",
    "1.3.6.1.4.1.311.60.2.1.3": "jurisdictionCountryName",
}


def _name(name: Any) -> tuple[tuple[tuple[str, str], ...], ...]:
    return tuple(
        tuple((_LONG_NAMES.get(a.oid.dotted_string, a.oid.dotted_string), str(a.value))
              for a in rdn)
        for rdn in name.rdns)


def _time(value: Any) -> str:
    # ASN1_TIME_print's layout: "Jan  5 09:34:43 2018 GMT" (day padded with a space).
    return f"{value:%b} {value.day:2d} {value:%H:%M:%S %Y} GMT"


def _serial(number: int) -> str:
    # i2a_ASN1_INTEGER prints whole bytes: an even number of hex digits.
    text = format(number, "X")
    return "0" + text if len(text) % 2 else text


def decode(der: bytes) -> dict[str, Any]:
    """The dictionary ``SSLSocket.getpeercert()`` gives for ``der``."""
    cert = x509.load_der_x509_certificate(der)
    info: dict[str, Any] = {
        "subject": _name(cert.subject),
        "issuer": _name(cert.issuer),
        "version": cert.version.value + 1,
        "serialNumber": _serial(cert.serial_number),
        "notBefore": _time(cert.not_valid_before_utc),
        "notAfter": _time(cert.not_valid_after_utc),
    }
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = None
    if san is not None:
        pairs: list[tuple[str, str]] = []
        for general_name in san:
            if isinstance(general_name, x509.DNSName):
                pairs.append(("DNS", general_name.value))
            elif isinstance(general_name, x509.IPAddress):
                pairs.append(("IP Address", str(general_name.value).upper()))
            elif isinstance(general_name, x509.RFC822Name):
                pairs.append(("email", general_name.value))
            elif isinstance(general_name, x509.UniformResourceIdentifier):
                pairs.append(("URI", general_name.value))
        info["subjectAltName"] = tuple(pairs)
    try:
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except x509.ExtensionNotFound:
        aia = None
    if aia is not None:
        for key, method in (("OCSP", Method.OCSP), ("caIssuers", Method.CA_ISSUERS)):
            urls = tuple(d.access_location.value for d in aia if d.access_method == method
                         and isinstance(d.access_location, x509.UniformResourceIdentifier))
            if urls:
                info[key] = urls
    try:
        cdp = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except x509.ExtensionNotFound:
        cdp = None
    if cdp is not None:
        urls = tuple(n.value for point in cdp for n in (point.full_name or ())
                     if isinstance(n, x509.UniformResourceIdentifier))
        if urls:
            info["crlDistributionPoints"] = urls
    return info
