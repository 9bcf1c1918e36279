"""Why a chase did not complete a chain: one sentence, the same in every place it is said.

The WARNING the chase logs and the note on the ``SSLCertVerificationError``
(records.py) give the same cause, the one OpenSSL reported: when certificates
were added and the chain still stops on a missing issuer, the issuer missing
is the last added certificate's, which the trust store lacks; the attempts
made for it only say why it could not be fetched (issue 32, item 2: the
WARNING blamed "no caIssuers URL" on the intermediate, the note the root).
"""

from __future__ import annotations

from collections.abc import Sequence

from ..logtext import escape
from ..x509_codes import MISSING_ISSUER

#: (subject, issuer, url, source) of an added certificate.
AddedFields = tuple[str, str, str, str]
#: (url, for_subject, reason) of an attempt that gave nothing.
FailedFields = tuple[str, str, str]


def sentence(error: int, error_text: str, added: Sequence[AddedFields],
             failed: Sequence[FailedFields]) -> str:
    """One sentence on why the chain was not completed, for a person to act on."""
    if error not in MISSING_ISSUER:
        return f"aia_ext completed the chain, then verification failed: {error_text}"
    if added:
        subject, issuer, url, source = added[-1]
        where = f"from {url}" if url else f"from the {source}"
        return (f"aia_ext added {escape(subject)} {escape(where)}; its issuer "
                f"{escape(issuer)} is not in the trust store and could not be fetched")
    if failed:
        reasons = "; ".join(f"{escape(url or for_subject)}: {escape(reason)}"
                            for url, for_subject, reason in failed[:3])
        return f"aia_ext could not fetch the missing issuer ({reasons})"
    return "aia_ext found no way to complete the chain"
