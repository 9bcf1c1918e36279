"""``aia_ext.diagnosis``: why a chain does or does not verify, and what the server should send.

The library side of ``aia-ext check`` (docs/diagnosis.md): ``diagnose()`` for one
target, ``verdict_of()`` and ``findings_of()`` for what a scanner reports.  The served chain is
verified through the same engine and chase as a handshake, on a context built
from the caller's trust arguments and options, so the limits apply and
fetched certificates are never trust anchors.  Importing this module loads
cryptography (to describe certificates); ``import aia_ext`` does not.
"""

from __future__ import annotations

from ._private.diagnose import CertificateInfo, Diagnosis, diagnose
from ._private.errors import DiagnosisError, TargetUnreachable
from ._private.findings import Finding, findings_of, verdict_of

__all__ = ["CertificateInfo", "Diagnosis", "DiagnosisError", "Finding", "TargetUnreachable",
           "diagnose", "findings_of", "verdict_of"]
