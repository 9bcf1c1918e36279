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

#: OpenSSL's texts for the codes above (x509_txt.c, 3.0 wording).
TEXT = {
    OK: "ok",
    UNSPECIFIED: "unspecified certificate verification error",
    UNABLE_TO_GET_ISSUER_CERT: "unable to get issuer certificate",
    CERT_SIGNATURE_FAILURE: "certificate signature failure",
    CERT_NOT_YET_VALID: "certificate is not yet valid",
    CERT_HAS_EXPIRED: "certificate has expired",
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
    INVALID_CA: "invalid CA certificate",
}


def text(code: int) -> str:
    """OpenSSL's wording for ``code`` (the unspecified text for codes not listed)."""
    return TEXT.get(code, TEXT[UNSPECIFIED])


def verification_error(code: int, detail: str = "") -> ssl.SSLCertVerificationError:
    """An SSLCertVerificationError shaped like the one _ssl raises for ``code``."""
    message = text(code)
    line = f"[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: {message}"
    if detail:
        line += f" ({detail})"
    error = ssl.SSLCertVerificationError(1, line)
    error.verify_code = code
    error.verify_message = message
    error.reason = "CERTIFICATE_VERIFY_FAILED"
    error.library = "SSL"
    return error
