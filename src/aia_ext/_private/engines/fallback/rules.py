"""What OpenSSL checks in a client's verification that cryptography's verifier does not.

The fallback must never accept what this interpreter's OpenSSL would refuse
on the same context (issue 13): a user moving from a pyenv Python to a uv
Python gets the same verdict or a stricter one.  cryptography's verifier
(``cryptography.x509.verification``) judges the path, signatures, validity,
name constraints and the peer name; OpenSSL also applies, from the context's
own settings:

- the security level (``SSL_CTX_get_security_level``; libssl sets it as the
  verification's auth level): keys and signature digests below its bits are
  refused (x509_vfy.c, ``check_key_level``/``check_sig_level``: the leaf's key
  first, then every issuer's key, and every signature but the anchor's);
- ``VERIFY_X509_STRICT`` (OpenSSL 3.0's ``check_extensions``);
- without ``VERIFY_X509_PARTIAL_CHAIN``, a trust anchor must be self-signed
  (``X509_self_signed``: its names and its authority key identifier match
  itself), else the path continues to the anchor's own trusted issuer;
- name constraints on DNS names, compared literally (v3_ncons.c), wildcards
  included;
- its own wildcard rules for DNS names (``X509_check_host`` with CPython's
  ``X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS``; crypto/x509/v3_utl.c);
- ``VERIFY_CRL_CHECK_*``: ``ssl`` offers no way to read the CRLs loaded into
  a context, so the fallback cannot honour these flags and refuses instead of
  ignoring them (code 3, "unable to get certificate CRL", with the reason).

Each check returns OpenSSL's code for what it found (0 when it passes).
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtensionOID, SignatureAlgorithmOID

from ... import x509_codes as codes
from ...der import DERError, children, element, names_match
from ...targets import is_ip_literal

#: Bits of security each level asks for (SSL_CTX_set_security_level(3)).
_MIN_BITS = (0, 80, 112, 128, 192, 256)

#: The signature digests' security bits, as OpenSSL 3.0 rates them for
#: certificates (x509_set.c, ossl_x509_init_sig_info): SHA-1 and MD5 are
#: lowered below level 1.  OpenSSL 1.1.1 rated them by digest size.
_OPENSSL_3 = ssl.OPENSSL_VERSION_INFO >= (3,)
_DIGEST_BITS = {
    "md5": 39 if _OPENSSL_3 else 64,
    "sha1": 63 if _OPENSSL_3 else 80,
    "sha224": 112, "sha256": 128, "sha384": 192, "sha512": 256,
    "sha3-224": 112, "sha3-256": 128, "sha3-384": 192, "sha3-512": 256,
}

_CRL_FLAGS = ssl.VERIFY_CRL_CHECK_LEAF | ssl.VERIFY_CRL_CHECK_CHAIN
#: X509_V_FLAG_PARTIAL_CHAIN; ssl names it from Python 3.10 on.
PARTIAL_CHAIN = getattr(ssl, "VERIFY_X509_PARTIAL_CHAIN", 0x80000)


def security_level(context: ssl.SSLContext) -> int:
    """The context's security level (``SSLContext.security_level``, 3.10+).

    Before 3.10 ``ssl`` does not show it; 2 is what CPython 3.10+ and
    Debian's OpenSSL configuration set, so the fallback judges by that
    rather than by the laxer library default.
    """
    level = getattr(context, "security_level", 2)
    return max(0, min(int(level), 5))


def refuse_crl_flags(context: ssl.SSLContext) -> str | None:
    """Why the fallback must refuse this context's CRL flags, or None."""
    flags = context.verify_flags & _CRL_FLAGS
    if not flags:
        return None
    name = ("VERIFY_CRL_CHECK_CHAIN" if flags & ssl.VERIFY_CRL_CHECK_CHAIN
            else "VERIFY_CRL_CHECK_LEAF")
    return (f"{name} is set, and the fallback engine cannot check CRLs: ssl does not "
            "expose the CRLs loaded into a context; the native engine can")


# ---- Key and signature strength -------------------------------------------

def _modulus_bits(bits: int) -> int:
    # BN_security_bits(L, -1) (crypto/bn/bn_lib.c): NIST SP 800-57's table.
    for size, security in ((15360, 256), (7680, 192), (3072, 128), (2048, 112), (1024, 80)):
        if bits >= size:
            return security
    return 0


def key_bits(cert: Any) -> int:
    """EVP_PKEY_get_security_bits of the certificate's key (0: unknown or unusable)."""
    try:
        key = cert.public_key()
    except Exception:  # noqa: BLE001 - an algorithm cryptography cannot load
        return 0
    if isinstance(key, rsa.RSAPublicKey):
        return _modulus_bits(key.key_size)
    if isinstance(key, dsa.DSAPublicKey):
        # BN_security_bits(L, N): also bounded by half the subgroup order's size.
        q_bits = key.parameters().parameter_numbers().q.bit_length()
        return min(_modulus_bits(key.key_size), q_bits // 2 if q_bits >= 160 else 0)
    if isinstance(key, ec.EllipticCurvePublicKey):
        return int(key.curve.key_size) // 2
    if isinstance(key, ed25519.Ed25519PublicKey):
        return 128
    if isinstance(key, ed448.Ed448PublicKey):
        return 224
    return 0


def signature_bits(cert: Any) -> int:
    oid = cert.signature_algorithm_oid
    if oid == SignatureAlgorithmOID.ED25519:
        return 128
    if oid == SignatureAlgorithmOID.ED448:
        return 224
    try:
        digest = cert.signature_hash_algorithm
    except Exception:  # noqa: BLE001 - unknown algorithm: no security OpenSSL can rate
        return 0
    if not isinstance(digest, hashes.HashAlgorithm):
        return 0
    return _DIGEST_BITS.get(digest.name, 0)


def leaf_key_code(leaf: Any, level: int) -> int:
    """X509_verify_cert checks the leaf's key before anything else."""
    return codes.EE_KEY_TOO_SMALL if level and key_bits(leaf) < _MIN_BITS[level] else 0


def strength_code(path: Sequence[Any], level: int) -> int:
    """check_auth_level: issuers' keys, and every signature but the anchor's."""
    if not level:
        return 0
    minimum = _MIN_BITS[level]
    for depth, cert in enumerate(path):
        if depth > 0 and key_bits(cert) < minimum:
            return codes.CA_KEY_TOO_SMALL
        if depth < len(path) - 1 and signature_bits(cert) < minimum:
            return codes.CA_MD_TOO_WEAK
    return 0


# ---- Self-signed anchors ---------------------------------------------------

def _extension(cert: Any, oid: Any) -> Any:
    try:
        return cert.extensions.get_extension_for_oid(oid)
    except x509.ExtensionNotFound:
        return None


def _serial(cert: Any) -> int:
    return int(cert.serial_number)


def akid_matches(child: Any, issuer: Any) -> bool:
    """X509_check_akid: every field of the child's authority key identifier that is
    present matches ``issuer`` (key id, issuer name and serial)."""
    extension = _extension(child, ExtensionOID.AUTHORITY_KEY_IDENTIFIER)
    if extension is None:
        return True
    aki = extension.value
    if aki.key_identifier is not None:
        ski = _extension(issuer, ExtensionOID.SUBJECT_KEY_IDENTIFIER)
        if ski is not None and ski.value.digest != aki.key_identifier:
            return False
    if aki.authority_cert_serial_number is not None \
            and aki.authority_cert_serial_number != _serial(issuer):
        return False
    if aki.authority_cert_issuer:
        directories = [n.value for n in aki.authority_cert_issuer
                       if isinstance(n, x509.DirectoryName)]
        issuer_name = issuer.issuer.public_bytes()
        if directories and not any(names_match(d.public_bytes(), issuer_name)
                                   for d in directories):
            return False
    return True


def self_signed(cert: Any) -> bool:
    """X509_self_signed(cert, 0): self-issued and its key identifiers agree."""
    return (names_match(cert.subject.public_bytes(), cert.issuer.public_bytes())
            and akid_matches(cert, cert))


# ---- VERIFY_X509_STRICT ----------------------------------------------------

def _is_ca(cert: Any, basic: Any) -> bool:
    if basic is not None:
        return bool(basic.value.ca)
    # OpenSSL treats a version 1 self-signed certificate as a CA.
    return cert.version == x509.Version.v1 and self_signed(cert)


def _algorithms_differ(der: bytes) -> bool:
    """The outer signatureAlgorithm and the TBS signature field differ (RFC 5280 4.1.1.2)."""
    try:
        _tag, start, end, _ = element(der, 0, len(der))
        tbs, outer = children(der, start, end, 1)[:2]
        fields = children(der, tbs[2], tbs[3], 2)
        inner = fields[2] if fields[0][1] == 0xA0 else fields[1]  # after [0] version
    except (DERError, IndexError, ValueError):
        return True
    # (element start, tag, content start, content end): compare whole elements.
    return der[inner[0]:inner[3]] != der[outer[0]:outer[3]]


def strict_code(path: Sequence[Any], ders: Sequence[bytes]) -> int:
    """OpenSSL 3.0's X509_STRICT checks on a path of more than one certificate."""
    if len(path) < 2:
        return 0  # RFC 6818: RFC 5280 does not apply to a self-issued end entity
    for depth, (cert, der) in enumerate(zip(path, ders)):
        code = _strict_one(cert, der, is_last=depth == len(path) - 1)
        if code:
            return code
    return 0


def _strict_one(cert: Any, der: bytes, is_last: bool) -> int:
    basic = _extension(cert, ExtensionOID.BASIC_CONSTRAINTS)
    usage = _extension(cert, ExtensionOID.KEY_USAGE)
    san = _extension(cert, ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
    aki = _extension(cert, ExtensionOID.AUTHORITY_KEY_IDENTIFIER)
    ski = _extension(cert, ExtensionOID.SUBJECT_KEY_IDENTIFIER)
    is_ca = _is_ca(cert, basic)
    cert_sign = usage is not None and bool(usage.value.key_cert_sign)
    crl_sign = usage is not None and bool(usage.value.crl_sign)
    if basic is not None and basic.value.path_length is not None:
        if not is_ca:
            return codes.PATHLEN_INVALID_FOR_NON_CA
        if not cert_sign:
            return codes.PATHLEN_WITHOUT_KU_KEY_CERT_SIGN
    if is_ca and basic is not None and not basic.critical:
        return codes.CA_BCONS_NOT_CRITICAL
    if is_ca and usage is None:
        return codes.CA_CERT_MISSING_KEY_USAGE
    if not is_ca and cert_sign:
        return codes.KU_KEY_CERT_SIGN_INVALID_FOR_NON_CA
    if len(cert.issuer) == 0:
        return codes.ISSUER_NAME_EMPTY
    if len(cert.subject) == 0:
        if is_ca or crl_sign or san is None:
            return codes.SUBJECT_NAME_EMPTY
        if not san.critical:
            return codes.EMPTY_SUBJECT_SAN_NOT_CRITICAL
    if san is not None and len(san.value) == 0:
        return codes.EMPTY_SUBJECT_ALT_NAME
    if _algorithms_differ(der):
        return codes.SIGNATURE_ALGORITHM_INCONSISTENCY
    if aki is not None and aki.critical:
        return codes.AUTHORITY_KEY_IDENTIFIER_CRITICAL
    if ski is not None and ski.critical:
        return codes.SUBJECT_KEY_IDENTIFIER_CRITICAL
    if cert.version == x509.Version.v3:
        if not is_last and (aki is None or aki.value.key_identifier is None):
            return codes.MISSING_AUTHORITY_KEY_IDENTIFIER
        if is_ca and ski is None:
            return codes.MISSING_SUBJECT_KEY_IDENTIFIER
    elif len(cert.extensions) > 0:
        return codes.EXTENSIONS_REQUIRE_VERSION_3
    return 0


# ---- Name constraints on DNS names, literally as OpenSSL applies them --------

def _dns_within(name: str, base: str) -> bool:
    # v3_ncons.c nc_dns: an empty base matches everything; else the name is the
    # base or ends with it on a label boundary, compared without case.  A
    # wildcard SAN is compared as the string it is (CVE-2025-61727: "*.a.b" is
    # not within "c.a.b").
    name, base = name.lower(), base.lower()
    if not base:
        return True
    if len(name) > len(base):
        return name.endswith(base) and (base.startswith(".") or name[-len(base) - 1] == ".")
    return name == base


def name_constraints_code(path: Sequence[Any]) -> int:
    """DNS-name constraints of every CA in the path on the certificates below it.

    cryptography applies name constraints too; this literal check keeps the
    fallback at least as strict as OpenSSL whatever cryptography's version
    decides about wildcards.  Self-issued intermediates are not checked
    (RFC 5280 6.1.3 (b)).
    """
    for upper in range(1, len(path)):
        extension = _extension(path[upper], ExtensionOID.NAME_CONSTRAINTS)
        if extension is None:
            continue
        permitted = [n.value for n in extension.value.permitted_subtrees or ()
                     if isinstance(n, x509.DNSName)]
        excluded = [n.value for n in extension.value.excluded_subtrees or ()
                    if isinstance(n, x509.DNSName)]
        for lower in range(upper):
            cert = path[lower]
            if lower > 0 and names_match(cert.subject.public_bytes(), cert.issuer.public_bytes()):
                continue
            san = _extension(cert, ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
            for name in san.value.get_values_for_type(x509.DNSName) if san is not None else ():
                if any(_dns_within(name, base) for base in excluded):
                    return codes.EXCLUDED_VIOLATION
                if permitted and not any(_dns_within(name, base) for base in permitted):
                    return codes.PERMITTED_VIOLATION
    return 0


# ---- Host names as X509_check_host matches them ----------------------------

def _valid_star(labels: list[str]) -> bool:
    # v3_utl.c valid_star with NO_PARTIAL_WILDCARDS: the whole leftmost label
    # is "*", at least two labels follow it, and none of them is empty.
    return (labels[0] == "*" and len(labels) >= 3 and all(labels[1:])
            and "*" not in "".join(labels[1:]))


def _host_char_ok(label: str) -> bool:
    return bool(label) and all(c.isascii() and (c.isalnum() or c == "-") for c in label)


def dns_name_matches(pattern: str, host: str) -> bool:
    """One dNSName against the host the way OpenSSL's equal_wildcard does."""
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if "*" not in pattern:
        return pattern == host
    labels = pattern.split(".")
    if not _valid_star(labels):
        return pattern == host  # an invalid wildcard is compared literally
    host_labels = host.split(".")
    if len(host_labels) != len(labels) or host_labels[1:] != labels[1:]:
        return False
    # A wildcard never stands for an IDNA label, nor matches an empty one.
    return _host_char_ok(host_labels[0]) and not host_labels[0].startswith("xn--")


def host_code(leaf: Any, hostname: str | None) -> int:
    """HOSTNAME_MISMATCH when no DNS name of the leaf matches by OpenSSL's rules.

    Only DNS names: IP addresses compare as bytes in both verifiers.  With
    ``hostname_checks_common_name`` off (CPython's default) OpenSSL never falls
    back to the subject's CN, and neither does cryptography.
    """
    if not hostname or is_ip_literal(hostname.strip("[]")):
        return 0
    san = _extension(leaf, ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
    names = san.value.get_values_for_type(x509.DNSName) if san is not None else []
    host = hostname.strip().rstrip(".")
    try:
        host = host.encode("idna").decode("ascii")
    except UnicodeError:
        pass
    return 0 if any(dns_name_matches(n, host) for n in names) else codes.HOSTNAME_MISMATCH

