"""The security level: the one check of a client's verification the binding cannot set.

libssl hands the connection's security level to X509_verify_cert as the
verification's auth level (``X509_VERIFY_PARAM_set_auth_level``), which
cryptography's binding does not expose.  OpenSSL then refuses keys and
signature digests below the level's bits (x509_vfy.c): the leaf's key first
of all (``X509_V_ERR_EE_KEY_TOO_SMALL``), and after building the path and
checking its extensions, every issuer's key and every signature but the
anchor's (``check_auth_level``).  verify.py applies these at the same points.

``VERIFY_X509_STRICT`` is the other: the list of what it checks grew with
OpenSSL's versions and is not the same in cryptography's OpenSSL as in the
interpreter's (OpenSSL 4.0 no longer requires a CA's basicConstraints to be
critical).  So the interpreter's list is applied here, on the path OpenSSL
built: OpenSSL 3.0's (x509_vfy.c, ``check_extensions``) for an interpreter
on OpenSSL 3.x, on top of cryptography's OpenSSL's own; 1.1.1's much shorter
one (``check_chain_extensions``) instead of it, for an interpreter on 1.1.1.

Each check returns OpenSSL's code for what it found (0 when it passes).
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtensionOID, SignatureAlgorithmOID

from ... import x509_codes as codes
from ...der import DERError, children, element, names_match

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


# ---- Key and signature strength -------------------------------------------

def _modulus_bits(bits: int) -> int:
    # BN_security_bits(L, -1) (crypto/bn/bn_lib.c): NIST SP 800-57's table.
    for size, security in ((15360, 256), (7680, 192), (3072, 128), (2048, 112), (1024, 80)):
        if bits >= size:
            return security
    return 0


#: id-dsa (RFC 3279 2.3.2), as DER content bytes.
_DSA_OID = bytes.fromhex("2a8648ce380401")


def _dsa_sizes(der: bytes) -> tuple[int, int] | None:
    """The bit lengths of p and q of a DSA key's parameters, read from the certificate's
    subjectPublicKeyInfo; None when the key is not DSA (or carries no parameters).

    Read here, not through cryptography: from cryptography 51 every use of its
    DSA classes warns that DSA is deprecated, and a verification must not
    warn (``-W error`` would turn the warning into a failed handshake).
    """
    try:
        _tag, start, end, _ = element(der, 0, len(der))
        tbs = children(der, start, end, 1)[0]
        fields = children(der, tbs[2], tbs[3], 2)
        spki = fields[6 if fields[0][1] == 0xA0 else 5]  # after [0] version, if any
        algorithm = children(der, spki[2], spki[3], 3)[0]
        parts = children(der, algorithm[2], algorithm[3], 4)
        if parts[0][1] != 0x06 or der[parts[0][2]:parts[0][3]] != _DSA_OID:
            return None
    except (DERError, IndexError, ValueError):
        return None
    try:
        p, q = children(der, parts[1][2], parts[1][3], 5)[:2]
    except (DERError, IndexError, ValueError):
        return 0, 0  # parameters inherited or unreadable: no security OpenSSL can rate
    return (int.from_bytes(der[p[2]:p[3]], "big").bit_length(),
            int.from_bytes(der[q[2]:q[3]], "big").bit_length())


def key_bits(cert: Any, der: bytes) -> int | None:
    """EVP_PKEY_get_security_bits of the certificate's key; None when cryptography
    cannot read the key (explicit curve parameters...): OpenSSL judges it then."""
    dsa_sizes = _dsa_sizes(der)
    if dsa_sizes is not None:
        # BN_security_bits(L, N): also bounded by half the subgroup order's size.
        p_bits, q_bits = dsa_sizes
        return min(_modulus_bits(p_bits), q_bits // 2 if q_bits >= 160 else 0)
    try:
        key = cert.public_key()
    except Exception:  # noqa: BLE001 - an algorithm cryptography cannot load
        return None
    if isinstance(key, rsa.RSAPublicKey):
        return _modulus_bits(key.key_size)
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


def leaf_key_code(leaf: Any, der: bytes, level: int) -> int:
    """X509_verify_cert checks the leaf's key before anything else."""
    bits = key_bits(leaf, der)
    return codes.EE_KEY_TOO_SMALL if level and bits is not None and bits < _MIN_BITS[level] else 0


def strength_code(path: Sequence[Any], ders: Sequence[bytes], level: int) -> tuple[int, int]:
    """check_auth_level: issuers' keys, and every signature but the anchor's;
    (code, depth), (0, 0) when the path passes."""
    if not level:
        return 0, 0
    minimum = _MIN_BITS[level]
    for depth, (cert, der) in enumerate(zip(path, ders)):
        bits = key_bits(cert, der) if depth > 0 else None
        if bits is not None and bits < minimum:
            return codes.CA_KEY_TOO_SMALL, depth
        if depth < len(path) - 1 and signature_bits(cert) < minimum:
            return codes.CA_MD_TOO_WEAK, depth
    return 0, 0


# ---- What the strict checks read -----------------------------------------------

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


def strict_code(path: Sequence[Any], ders: Sequence[bytes]) -> tuple[int, int]:
    """OpenSSL 3.0's X509_STRICT checks on a path of more than one certificate:
    (code, depth), (0, 0) when they pass."""
    if len(path) < 2:
        return 0, 0  # RFC 6818: RFC 5280 does not apply to a self-issued end entity
    for depth, (cert, der) in enumerate(zip(path, ders)):
        code = _strict_one(cert, der, is_last=depth == len(path) - 1)
        if code:
            return code, depth
    return 0, 0


def _check_ca(cert: Any) -> int:
    """X509_check_ca: 1 for basicConstraints CA:TRUE, 0 for not a CA, 3-5 for the
    older ways of looking like one (a v1 root, keyCertSign without basicConstraints)."""
    usage = _extension(cert, ExtensionOID.KEY_USAGE)
    if usage is not None and not usage.value.key_cert_sign:
        return 0
    basic = _extension(cert, ExtensionOID.BASIC_CONSTRAINTS)
    if basic is not None:
        return 1 if basic.value.ca else 0
    if cert.version == x509.Version.v1 and self_signed(cert):
        return 3
    return 4 if usage is not None else 0


def strict_code_111(path: Sequence[Any]) -> tuple[int, int]:
    """OpenSSL 1.1.1's X509_STRICT (check_chain_extensions): a leaf that only looks
    like a CA, and a trust anchor that is not a basicConstraints CA, are invalid CAs
    (24 there); (code, depth), (0, 0) when they pass."""
    for depth, cert in enumerate(path):
        kind = _check_ca(cert)
        if (depth == 0 and kind not in (0, 1)) or (depth > 0 and kind != 1):
            return 24, depth
    return 0, 0


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


# ---- Host names cryptography's OpenSSL will not take ----------------------------

_NO_WILDCARDS, _NO_PARTIAL_WILDCARDS, _NEVER_CHECK_SUBJECT = 0x2, 0x4, 0x20


def _wildcard_matches(pattern: str, name: str, hostflags: int) -> bool:
    # OpenSSL 3.x v3_utl.c, valid_star and wildcard_match, for a whole-label
    # star (CPython sets NO_PARTIAL_WILDCARDS): "*" then at least two labels.
    labels = pattern.split(".")
    if (hostflags & _NO_WILDCARDS or labels[0] != "*" or "*" in pattern[1:]
            or len(labels) < 3 or not all(labels[1:])):
        return False
    first, _, rest = name.partition(".")
    return (bool(first) and all(c.isascii() and (c.isalnum() or c == "-") for c in first)
            and rest.lower() == ".".join(labels[1:]).lower())


def legacy_host_matches(leaf: Any, name: str, hostflags: int) -> bool:
    """X509_check_host as OpenSSL 3.x runs it, for a name OpenSSL 4.0 refuses to take.

    The name is compared as it is (no trailing dot removed): with a DNS name
    of the subjectAltName, case aside, or through a whole-label wildcard;
    the subject's common name only when there is no DNS name and the
    context checks it (``hostname_checks_common_name``).
    """
    san = _extension(leaf, ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
    patterns = san.value.get_values_for_type(x509.DNSName) if san is not None else []
    if not patterns and not hostflags & _NEVER_CHECK_SUBJECT:
        patterns = [str(a.value) for a in leaf.subject.get_attributes_for_oid(
            x509.NameOID.COMMON_NAME)]
    return any(p.lower() == name.lower() or _wildcard_matches(p, name, hostflags)
               for p in patterns)
