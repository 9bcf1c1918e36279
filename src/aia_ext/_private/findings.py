"""Chain hygiene findings and the verdict of a diagnosis, as ``aia-ext check`` reports them.

The verdict separates what scanners must tell apart:

- ``ok`` (exit 0): verifies, and the server sends a complete chain;
- ``incomplete`` (3): verifies only because missing intermediates were fetched or
  taken from the pool: the server is misconfigured, browsers accept it;
- ``invalid`` (1): does not verify, and no failed fetch could change that;
- ``inconclusive`` (4): does not verify, and at least one caIssuers URL could not be
  fetched (timeout, refused, HTTP error, policy...), so the answer could change;
- ``unreachable`` (5): no TLS handshake with the target (decided by the caller);
- ``error`` (2): the target itself is bad input.

Findings name what an operator must fix, each with a stable ``code``
(docs/diagnosis.md lists them), whatever the verdict: a chain that verifies
while sending its root still says so.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from .logtext import escape
from .x509_codes import (
    CERT_HAS_EXPIRED,
    CERT_NOT_YET_VALID,
    DEPTH_ZERO_SELF_SIGNED_CERT,
    HOSTNAME_MISMATCH,
    INVALID_CA,
    INVALID_PURPOSE,
    IP_ADDRESS_MISMATCH,
    MISSING_ISSUER,
    SELF_SIGNED_CERT_IN_CHAIN,
)

if TYPE_CHECKING:
    from .diagnose import CertificateInfo, Diagnosis

Verdict = Literal["ok", "incomplete", "invalid", "inconclusive", "unreachable", "error"]
EXIT_CODES: dict[str, int] = {"ok": 0, "invalid": 1, "error": 2, "incomplete": 3,
                              "inconclusive": 4, "unreachable": 5}
#: The verdict of a batch is its worst target's, in this order (worst first).
WORST_FIRST: tuple[str, ...] = ("error", "invalid", "unreachable", "inconclusive",
                                "incomplete", "ok")

#: Failure reasons that are the AIA server's definitive answer: fetching again
#: would give the same.  Any other failed fetch leaves the verdict open.
_DEFINITIVE = ("no certificate issued the child", "nothing new", "no caIssuers URL",
               "unreadable certificate")


@dataclass(frozen=True)
class Finding:
    """One thing about the chain an operator should know or fix."""

    code: str
    message: str
    #: (subject, SHA-256) of the certificates concerned.
    certificates: tuple[tuple[str, str], ...] = ()
    fix: str = ""
    url: str = ""
    reason: str = ""
    names: tuple[str, ...] = field(default=())


def worst(verdicts: list[str]) -> str:
    return min(verdicts, key=WORST_FIRST.index) if verdicts else "ok"


def verdict_of(diagnosis: Diagnosis) -> Verdict:
    if diagnosis.verified:
        return "incomplete" if diagnosis.chain_was_incomplete else "ok"
    if any(f.url and not f.reason.startswith(_DEFINITIVE) for f in diagnosis.failed):
        return "inconclusive"
    return "invalid"


def _ref(cert: CertificateInfo) -> tuple[str, str]:
    return (cert.subject, cert.sha256)


def _when(at: str | None) -> datetime.datetime:
    if at:
        return datetime.datetime.fromisoformat(at)
    return datetime.datetime.now(datetime.timezone.utc)


def findings_of(diagnosis: Diagnosis) -> list[Finding]:
    """Every finding about ``diagnosis``, leaf-side first."""
    out: list[Finding] = []
    served = diagnosis.served_chain
    out += _duplicates(served)
    unique = list({c.sha256: c for c in served}.values())
    out += _roots(unique, set(diagnosis.trusted_served))
    out += _order_and_extras(diagnosis, unique)
    out += _expired(unique, _when(diagnosis.at))
    if diagnosis.verified and diagnosis.chain_was_incomplete:
        for added in diagnosis.added:
            where = added.url or f"the {added.source}"
            out.append(Finding(
                "missing-intermediate",
                f"the server does not send {added.subject}; it was taken from {where}",
                ((added.subject, ""),),
                "configure the server to send the leaf followed by its intermediates "
                "(--pem writes that chain)", url=added.url))
    for failed in diagnosis.failed:
        if failed.url and not failed.reason.startswith(_DEFINITIVE):
            out.append(Finding(
                "aia-unreachable",
                f"the caIssuers URL {failed.url} of {failed.for_subject} gave nothing: "
                f"{failed.reason}", (), "make the URL serve the issuer certificate (DER)",
                url=failed.url, reason=failed.reason))
    if not diagnosis.verified:
        out.append(_verify_error(diagnosis))
        if diagnosis.verify_code in (HOSTNAME_MISMATCH, IP_ADDRESS_MISMATCH) and served:
            leaf = served[0]
            names = leaf.dns_names + leaf.ip_addresses
            out.append(Finding(
                "hostname-mismatch",
                f"the certificate is not valid for {diagnosis.hostname}; it holds "
                + (", ".join(names) if names else "no subjectAltName"),
                (_ref(leaf),), f"use a certificate that names {diagnosis.hostname}",
                names=names))
    return out


def _duplicates(served: tuple[CertificateInfo, ...]) -> list[Finding]:
    seen: dict[str, int] = {}
    for cert in served:
        seen[cert.sha256] = seen.get(cert.sha256, 0) + 1
    return [Finding("duplicate-certificate",
                    f"the server sends {c.subject} {seen[c.sha256]} times",
                    (_ref(c),), "send each certificate once")
            for c in {c.sha256: c for c in served}.values() if seen[c.sha256] > 1]


def _roots(unique: list[CertificateInfo], trusted: set[str]) -> list[Finding]:
    return [Finding("root-sent",
                    f"the server sends the root {c.subject}, which clients must already hold",
                    (_ref(c),), "stop sending the root: it wastes bytes and trusts nothing")
            for c in unique[1:] if c.sha256 in trusted or (c.subject == c.issuer and c.is_ca)]


def _order_and_extras(diagnosis: Diagnosis, unique: list[CertificateInfo]) -> list[Finding]:
    """Wrong order, and served certificates on no path from the leaf."""
    if not unique:
        return []
    out: list[Finding] = []
    on_path = {unique[0].sha256}
    path = [0]
    current = unique[0]
    for _step in range(len(unique)):
        if current.subject == current.issuer:
            break
        issuers = [i for i, c in enumerate(unique) if c.subject == current.issuer
                   and c.sha256 not in on_path]
        if not issuers:
            break
        on_path.add(unique[issuers[0]].sha256)
        path.append(issuers[0])
        current = unique[issuers[0]]
    if path != sorted(path):
        order = ", ".join(unique[i].subject for i in path)
        out.append(Finding(
            "wrong-order",
            f"the chain is not sent in order (leaf, then each issuer): expected {order}",
            tuple(_ref(unique[i]) for i in path[1:]),
            "send the leaf, then each certificate's issuer in turn"))
    verified = {c.sha256 for c in diagnosis.verified_chain}
    for cert in unique[1:]:
        if cert.sha256 not in on_path and cert.sha256 not in verified:
            out.append(Finding(
                "unrelated-certificate",
                f"the server sends {cert.subject}, which is on no path from its leaf",
                (_ref(cert),), "remove it from the server's chain file"))
    return out


def _expired(unique: list[CertificateInfo], now: datetime.datetime) -> list[Finding]:
    out = []
    for cert in unique:
        if not cert.not_after or not cert.not_before:
            continue
        if datetime.datetime.fromisoformat(cert.not_after) < now:
            out.append(Finding("expired-certificate-served",
                               f"the server sends {cert.subject}, which expired {cert.not_after}",
                               (_ref(cert),), "replace or remove it"))
        elif datetime.datetime.fromisoformat(cert.not_before) > now:
            out.append(Finding("expired-certificate-served",
                               f"the server sends {cert.subject}, which is valid only from "
                               f"{cert.not_before}", (_ref(cert),), "replace or remove it"))
    return out


_FIXES = {
    CERT_HAS_EXPIRED: "renew the certificate",
    CERT_NOT_YET_VALID: "check the certificate's dates, or this machine's clock",
    DEPTH_ZERO_SELF_SIGNED_CERT: "use a certificate from a CA, or trust this one (--cafile) "
                                 "if it is yours",
    SELF_SIGNED_CERT_IN_CHAIN: "the chain ends in a root that is not trusted here: trust it "
                               "(--cafile) if it is yours",
    HOSTNAME_MISMATCH: "use a certificate that names the host",
    IP_ADDRESS_MISMATCH: "use a certificate that names the address",
    INVALID_PURPOSE: "use a certificate issued for TLS servers (extendedKeyUsage serverAuth)",
    INVALID_CA: "an issuer in the chain is not a CA certificate: fix the chain",
}


def _verify_error(diagnosis: Diagnosis) -> Finding:
    path = diagnosis.failed_path or diagnosis.served_chain
    depth = diagnosis.verify_depth
    concerned = path[depth] if 0 <= depth < len(path) else None
    refs = (_ref(concerned),) if concerned is not None else ()
    code = diagnosis.verify_code
    if code in MISSING_ISSUER:
        fix = ("the issuer could not be found: check the trust store (--cafile) and the "
               "caIssuers URLs, or send the intermediates")
    else:
        fix = _FIXES.get(code, "see the verify code's meaning in OpenSSL's verify(1)")
    about = f" ({concerned.subject})" if concerned is not None else ""
    return Finding("verify-error",
                   f"verify error {code} at depth {depth}{about}: {diagnosis.verify_message}",
                   refs, fix)


def render_text(finding: Finding) -> str:
    """Two lines for a terminal, with certificate text escaped."""
    line = f"  [{finding.code}] {escape(finding.message)}\n"
    if finding.fix:
        line += f"      fix: {finding.fix}\n"
    return line


def to_json(finding: Finding) -> dict[str, object]:
    out: dict[str, object] = {
        "code": finding.code, "message": finding.message, "fix": finding.fix,
        "certificates": [{"subject": s, "sha256": h} for s, h in finding.certificates],
    }
    if finding.url:
        out["url"] = finding.url
    if finding.reason:
        out["reason"] = finding.reason
    if finding.names:
        out["names"] = list(finding.names)
    return out
