"""OpenSSL's verify codes (``X509_V_ERR_*``) and the limits shared with the C part.

One table for every module that reads or produces a verify code: the
engines, reports, diagnosis and the CLI.  Values and texts are OpenSSL's
(``include/openssl/x509_vfy.h``, ``crypto/x509/x509_txt.c``); they are the
``verify_code`` / ``verify_message`` of ``ssl.SSLCertVerificationError``.
"""

from __future__ import annotations

import ssl

OK = 0
UNSPECIFIED = 1
UNABLE_TO_GET_ISSUER_CERT = 2
UNABLE_TO_GET_CRL = 3
CERT_SIGNATURE_FAILURE = 7
CERT_NOT_YET_VALID = 9
CERT_HAS_EXPIRED = 10
DEPTH_ZERO_SELF_SIGNED_CERT = 18
SELF_SIGNED_CERT_IN_CHAIN = 19
UNABLE_TO_GET_ISSUER_CERT_LOCALLY = 20
UNABLE_TO_VERIFY_LEAF_SIGNATURE = 21
PATH_LENGTH_EXCEEDED = 25
INVALID_PURPOSE = 26
PERMITTED_VIOLATION = 47
EXCLUDED_VIOLATION = 48
HOSTNAME_MISMATCH = 62
EMAIL_MISMATCH = 63
IP_ADDRESS_MISMATCH = 64
EE_KEY_TOO_SMALL = 66
CA_KEY_TOO_SMALL = 67
CA_MD_TOO_WEAK = 68
# What X509_V_FLAG_X509_STRICT adds in OpenSSL 3.0 (x509_vfy.c, check_extensions).
SIGNATURE_ALGORITHM_INCONSISTENCY = 78
PATHLEN_INVALID_FOR_NON_CA = 80
PATHLEN_WITHOUT_KU_KEY_CERT_SIGN = 81
KU_KEY_CERT_SIGN_INVALID_FOR_NON_CA = 82
ISSUER_NAME_EMPTY = 83
SUBJECT_NAME_EMPTY = 84
MISSING_AUTHORITY_KEY_IDENTIFIER = 85
MISSING_SUBJECT_KEY_IDENTIFIER = 86
EMPTY_SUBJECT_ALT_NAME = 87
EMPTY_SUBJECT_SAN_NOT_CRITICAL = 88
CA_BCONS_NOT_CRITICAL = 89
AUTHORITY_KEY_IDENTIFIER_CRITICAL = 90
SUBJECT_KEY_IDENTIFIER_CRITICAL = 91
CA_CERT_MISSING_KEY_USAGE = 92
EXTENSIONS_REQUIRE_VERSION_3 = 93
#: X509_V_ERR_INVALID_CA moved from 24 to 79 in OpenSSL 3.0.
INVALID_CA = 79 if ssl.OPENSSL_VERSION_INFO >= (3,) else 24

#: The two codes AIA chasing answers: the chain stops at a certificate whose
#: issuer is neither served nor trusted (docs/design.md, invariant 2: they stay the
#: verdict when chasing finds nothing).
MISSING_ISSUER = frozenset({UNABLE_TO_GET_ISSUER_CERT, UNABLE_TO_GET_ISSUER_CERT_LOCALLY})

#: Fetch-and-reverify rounds in one verification, at most.  The user-visible
#: limits (max_fetches, deadline) stop a chase long before; this bound only
#: guarantees termination.  The C part has the same number (AIA_MAX_ROUNDS in
#: csrc/aia_ext.h).
MAX_ROUNDS = 32
#: Certificates in one verification's untrusted stack, at most (AIA_MAX_UNTRUSTED).
MAX_UNTRUSTED = 128

#: OpenSSL's texts for the codes above and the commonest others (x509_txt.c,
#: 3.0 wording): what a verify_message reads where the interpreter's OpenSSL
#: cannot be asked (the fallback engine; newer OpenSSL reworded some).
TEXT = {
    OK: "ok",
    UNSPECIFIED: "unspecified certificate verification error",
    UNABLE_TO_GET_ISSUER_CERT: "unable to get issuer certificate",
    UNABLE_TO_GET_CRL: "unable to get certificate CRL",
    4: "unable to decrypt certificate's signature",
    5: "unable to decrypt CRL's signature",
    6: "unable to decode issuer public key",
    CERT_SIGNATURE_FAILURE: "certificate signature failure",
    8: "CRL signature failure",
    CERT_NOT_YET_VALID: "certificate is not yet valid",
    CERT_HAS_EXPIRED: "certificate has expired",
    11: "CRL is not yet valid",
    12: "CRL has expired",
    13: "format error in certificate's notBefore field",
    14: "format error in certificate's notAfter field",
    15: "format error in CRL's lastUpdate field",
    16: "format error in CRL's nextUpdate field",
    17: "out of memory",
    22: "certificate chain too long",
    23: "certificate revoked",
    27: "certificate not trusted",
    28: "certificate rejected",
    32: "key usage does not include certificate signing",
    33: "unable to get CRL issuer certificate",
    34: "unhandled critical extension",
    35: "key usage does not include CRL signing",
    36: "unhandled critical CRL extension",
    DEPTH_ZERO_SELF_SIGNED_CERT: "self-signed certificate",
    SELF_SIGNED_CERT_IN_CHAIN: "self-signed certificate in certificate chain",
    UNABLE_TO_GET_ISSUER_CERT_LOCALLY: "unable to get local issuer certificate",
    UNABLE_TO_VERIFY_LEAF_SIGNATURE: "unable to verify the first certificate",
    PATH_LENGTH_EXCEEDED: "path length constraint exceeded",
    INVALID_PURPOSE: "unsuitable certificate purpose",
    PERMITTED_VIOLATION: "permitted subtree violation",
    EXCLUDED_VIOLATION: "excluded subtree violation",
    HOSTNAME_MISMATCH: "hostname mismatch",
    EMAIL_MISMATCH: "email address mismatch",
    IP_ADDRESS_MISMATCH: "IP address mismatch",
    EE_KEY_TOO_SMALL: "EE certificate key too weak",
    CA_KEY_TOO_SMALL: "CA certificate key too weak",
    CA_MD_TOO_WEAK: "CA signature digest algorithm too weak",
    SIGNATURE_ALGORITHM_INCONSISTENCY: "cert info signature and signature algorithm mismatch",
    PATHLEN_INVALID_FOR_NON_CA: "Path length invalid for non-CA cert",
    PATHLEN_WITHOUT_KU_KEY_CERT_SIGN: "Path length given without key usage keyCertSign",
    KU_KEY_CERT_SIGN_INVALID_FOR_NON_CA: "Key usage keyCertSign invalid for non-CA cert",
    ISSUER_NAME_EMPTY: "Issuer name empty",
    SUBJECT_NAME_EMPTY: "Subject name empty",
    MISSING_AUTHORITY_KEY_IDENTIFIER: "Missing Authority Key Identifier",
    MISSING_SUBJECT_KEY_IDENTIFIER: "Missing Subject Key Identifier",
    EMPTY_SUBJECT_ALT_NAME: "Empty Subject Alternative Name extension",
    EMPTY_SUBJECT_SAN_NOT_CRITICAL: "Subject empty and Subject Alt Name extension not critical",
    CA_BCONS_NOT_CRITICAL: "Basic Constraints of CA cert not marked critical",
    AUTHORITY_KEY_IDENTIFIER_CRITICAL: "Authority Key Identifier marked critical",
    SUBJECT_KEY_IDENTIFIER_CRITICAL: "Subject Key Identifier marked critical",
    CA_CERT_MISSING_KEY_USAGE: "CA cert does not include key usage extension",
    EXTENSIONS_REQUIRE_VERSION_3: "Using cert extension requires at least X509v3",
    INVALID_CA: "invalid CA certificate",
}


def text(code: int) -> str:
    """OpenSSL's wording for ``code`` (the unspecified text for codes not listed)."""
    return TEXT.get(code, TEXT[UNSPECIFIED])


def verification_error(code: int, detail: str = "", *, message: str | None = None,
                       suffix: str = "") -> ssl.SSLCertVerificationError:
    """An SSLCertVerificationError shaped like the one _ssl raises for ``code``.

    ``message`` is the verify message (OpenSSL's text for ``code`` unless
    given); ``suffix`` is what _ssl appends, e.g. ``(_ssl.c:1000)``; ``detail``
    explains a failure OpenSSL never reports itself (shown in parentheses).
    """
    message = text(code) if message is None else message
    line = f"[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: {message}"
    if detail:
        line += f" ({detail})"
    if suffix:
        line += f" {suffix}"
    error = ssl.SSLCertVerificationError(1, line)
    error.verify_code = code
    error.verify_message = message
    error.reason = "CERTIFICATE_VERIFY_FAILED"
    error.library = "SSL"
    return error
