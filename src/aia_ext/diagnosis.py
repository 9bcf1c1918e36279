"""``aia_ext.diagnosis``: why a chain does or does not verify, and what the server should send.

The library side of ``aia-ext check`` (docs/diagnosis.md).  The served chain is
verified through the same engine and chase as a handshake, on a context built
from the caller's trust arguments and options, so the limits apply and
fetched certificates are never trust anchors.  Importing this module loads
cryptography (to describe certificates); ``import aia_ext`` does not.
"""

from __future__ import annotations

from ._private.diagnose import CertificateInfo, Diagnosis, diagnose
from ._private.errors import DiagnosisError

__all__ = ["CertificateInfo", "Diagnosis", "DiagnosisError", "diagnose"]
