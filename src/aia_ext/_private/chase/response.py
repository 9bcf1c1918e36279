"""An AIA response body -> the certificates it carries, under the response limits.

The formats are bundle.py's (DER, PEM, PKCS#7 in DER or BER).  A response is
hostile input (docs/design.md, invariant 5): it is at most
``max_response_bytes`` long, and at most ``MAX_CERTIFICATES`` certificates are
taken from it.
"""

from __future__ import annotations

from ..bundle import NO_CERTIFICATE, BundleError, certificates_in_bundle
from ..der import ParsedCertificate
from ..errors import FetchError

#: Certificates taken from one response; a real one carries one to three.
MAX_CERTIFICATES = 16


def certificates_in_response(body: bytes) -> list[ParsedCertificate]:
    """All certificates in one AIA response, in the order served (at most 16).

    Raises FetchError("parse error") when the body holds none.
    """
    try:
        return certificates_in_bundle(body, MAX_CERTIFICATES)
    except BundleError as exc:
        detail = str(exc)
        if detail == NO_CERTIFICATE:
            detail = "no certificate in the response"
        raise FetchError("parse error", detail) from None
