"""The security level: the one check of a client's verification the binding cannot set.

libssl hands the connection's security level to X509_verify_cert as the
verification's auth level (``X509_VERIFY_PARAM_set_auth_level``), which
cryptography's binding does not expose.  OpenSSL then refuses keys and
signature digests below the level's bits (x509_vfy.c): the leaf's key first
of all (``X509_V_ERR_EE_KEY_TOO_SMALL``), and after building the path and
checking its extensions, every issuer's key and every signature but the
anchor's (``check_auth_level``).  verify.py applies these at the same points.

Each check returns OpenSSL's code for what it found (0 when it passes).
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509.oid import SignatureAlgorithmOID

from ... import x509_codes as codes

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


def security_level(context: ssl.SSLContext) -> int:
    """The context's security level (``SSLContext.security_level``, 3.10+).

    Before 3.10 ``ssl`` does not show it; 2 is what CPython 3.10+ and
    Debian's OpenSSL configuration set, so the fallback judges by that
    rather than by the laxer library default.
    """
    level = getattr(context, "security_level", 2)
    return max(0, min(int(level), 5))


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


def strength_code(path: Sequence[Any], level: int) -> tuple[int, int]:
    """check_auth_level: issuers' keys, and every signature but the anchor's;
    (code, depth), (0, 0) when the path passes."""
    if not level:
        return 0, 0
    minimum = _MIN_BITS[level]
    for depth, cert in enumerate(path):
        if depth > 0 and key_bits(cert) < minimum:
            return codes.CA_KEY_TOO_SMALL, depth
        if depth < len(path) - 1 and signature_bits(cert) < minimum:
            return codes.CA_MD_TOO_WEAK, depth
    return 0, 0
