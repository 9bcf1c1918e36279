"""``diagnose()``: why a chain does or does not verify, and what the server should send.

The served chain is verified through the same C chase as a handshake, on an
enabled context built from the caller's trust arguments and options, so the
limits apply and fetched certificates are never trust anchors.  The only
difference from a handshake is that verification runs offline (on the chain
recorded from the server, or read from a file), which also allows ``at``.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import socket
import ssl
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Union

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding

from . import binding, engines
from .api import create_default_context_with
from .bundle import BundleError, certificates_in_bundle
from .chase import finished
from .der import DERError, parse_certificate
from .errors import DiagnosisError
from .options import documented, make_options
from .report import AddedCertificate, FailedAttempt, from_chase
from .targets import is_ip_literal, looks_like_url, parse_host_port
from .x509_codes import MISSING_ISSUER

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from .chase.core import Chase
    from .options import OptionsKwargs

Target = Union[str, bytes, "os.PathLike[str]"]
#: Seconds to connect to and handshake with the diagnosed server.
CONNECT_TIMEOUT = 10.0
#: Certificates in one diagnosed chain at most (the C side's limit too).
MAX_CHAIN = 64
#: Bytes read from a certificate file at most.
MAX_FILE = 10 * 1024 * 1024


@dataclass(frozen=True)
class CertificateInfo:
    """One certificate of a chain, with what a person needs to recognise it."""

    subject: str
    issuer: str
    not_before: str  # ISO 8601, UTC
    not_after: str
    sha256: str  # fingerprint, hex
    ca_issuers: tuple[str, ...]
    der: bytes = field(repr=False)

    @property
    def pem(self) -> str:
        return ssl.DER_cert_to_PEM_cert(self.der)


@dataclass(frozen=True)
class Diagnosis:
    """The outcome of ``aia_ext.diagnose()``."""

    target: str
    hostname: str | None
    at: str | None  # ISO 8601 verification time, None for "now"
    served_chain: tuple[CertificateInfo, ...]
    #: For each issuer the served chain lacked: "issuer of <subject>".
    missing: tuple[str, ...]
    added: tuple[AddedCertificate, ...]
    failed: tuple[FailedAttempt, ...]
    verified: bool
    verify_code: int
    verify_message: str
    verified_chain: tuple[CertificateInfo, ...]
    chain_was_incomplete: bool
    #: Leaf and intermediates, in order, without the trust anchor: what the
    #: server should be configured to send.  None when the chain does not verify.
    fixed_chain_pem: str | None = field(repr=False)


def _info(cert: x509.Certificate) -> CertificateInfo:
    der = cert.public_bytes(Encoding.DER)
    try:
        urls = parse_certificate(der).ca_issuers
    except DERError:
        urls = ()
    return CertificateInfo(
        cert.subject.rfc4514_string(), cert.issuer.rfc4514_string(),
        _utc(cert, "not_valid_before"), _utc(cert, "not_valid_after"),
        cert.fingerprint(hashes.SHA256()).hex(), urls, der,
    )


def _utc(cert: x509.Certificate, field: str) -> str:
    value = getattr(cert, f"{field}_utc", None)  # cryptography >= 42
    if value is None:  # pragma: no cover - older cryptography
        value = getattr(cert, field).replace(tzinfo=datetime.timezone.utc)
    return str(value.isoformat())


def _infos(ders: list[bytes] | tuple[bytes, ...]) -> tuple[CertificateInfo, ...]:

    infos = []
    for der in ders:
        # These are other people's certificates, which OpenSSL has accepted;
        # cryptography's stricter parser may warn about (real roots with a
        # non-positive serial) or one day refuse them.  Neither is ours to raise.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                infos.append(_info(x509.load_der_x509_certificate(der)))
                continue
            except Exception as exc:  # noqa: BLE001
                reason = f"(not readable by cryptography: {exc})"
        infos.append(CertificateInfo(reason, reason, "", "", hashlib.sha256(der).hexdigest(),
                                     (), der))
    return tuple(infos)


def _certificates_from_data(data: bytes, source: str) -> list[bytes]:
    try:
        return [c.der for c in certificates_in_bundle(data, MAX_CHAIN + 1)]
    except BundleError as exc:
        raise DiagnosisError(f"{source} holds no readable certificate ({exc})") from None


def _record_served_chain(host: str, port: int, server_name: str | None) -> list[bytes]:
    """The chain the server sends, recorded without verifying it."""
    recorder = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    recorder.check_hostname = False
    recorder.verify_mode = ssl.CERT_NONE  # only to record; verification is done below
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT) as raw, \
                recorder.wrap_socket(raw, server_hostname=server_name) as tls:
            return binding.served_chain(tls)
    except (OSError, ssl.SSLError) as exc:
        raise DiagnosisError(f"cannot reach {host}:{port}: {exc}") from None


def _parse_target(target: Target) -> tuple[str, list[bytes] | None, str | None, int]:
    """(label, certificates or None for a server, host, port)."""
    if isinstance(target, (bytes, bytearray)):
        return "<certificate data>", _certificates_from_data(bytes(target), "the data"), None, 0
    text = os.fspath(target)
    if not looks_like_url(text) and os.path.exists(text):
        try:
            with open(text, "rb") as f:
                data = f.read(MAX_FILE)
        except OSError as exc:
            raise DiagnosisError(f"cannot read {text}: {exc.strerror or exc}") from None
        return text, _certificates_from_data(data, text), None, 0
    try:
        host, port = parse_host_port(text)
    except ValueError as exc:
        raise DiagnosisError(str(exc)) from None
    return text, None, host, port


@documented
def diagnose(
    target: Target,
    *,
    cafile: str | os.PathLike[str] | None = None,
    capath: str | os.PathLike[str] | None = None,
    hostname: str | None = None,
    at: datetime.datetime | None = None,
    **options: Unpack[OptionsKwargs],
) -> Diagnosis:
    """Explain whether ``target``'s chain verifies, and what fixes it.

    ``target`` is an ``https://`` URL or ``host[:port]`` (connect, record the
    chain the server sends, then complete and verify it), or a certificate as
    a path or bytes, PEM or DER, one certificate or a bundle with the leaf
    first (complete and verify it offline).  ``hostname`` defaults to the URL's
    host; ``at`` (an aware datetime) verifies as of that time instead of now.

    :raises DiagnosisError: (a ValueError and an AIAError) for a target that
        cannot be read or reached.
    :raises ValueError: ``at`` is not timezone-aware, or an option is out of range.
    """
    if at is not None and (not isinstance(at, datetime.datetime) or at.tzinfo is None):
        raise ValueError("at must be a timezone-aware datetime")
    context = create_default_context_with(ssl.Purpose.SERVER_AUTH, cafile, capath, None,
                                          make_options(options))
    label, ders, host, port = _parse_target(target)
    if ders is None:
        assert host is not None
        hostname = hostname or host
        ders = _record_served_chain(host, port, None if is_ip_literal(hostname) else hostname)
        if not ders:
            raise DiagnosisError(f"{host}:{port} sent no certificate")
    if len(ders) > MAX_CHAIN:
        raise DiagnosisError(f"more than {MAX_CHAIN} certificates given")
    engine = engines.enabled_engine(context)
    assert engine is not None, "create_default_context() enables its context"
    try:
        outcome = engine.verify_offline(context, ders, hostname, at)
    except ValueError as exc:
        raise DiagnosisError(str(exc)) from None
    state = finished.get(outcome.chase_id) if outcome.chase_id else None
    return _result(label, hostname, at, ders, outcome.chain, outcome.ok, outcome.code,
                   outcome.depth, state)


def _result(label: str, hostname: str | None, at: datetime.datetime | None,
            ders: list[bytes], chain: tuple[bytes, ...], ok: bool, code: int, depth: int,
            state: Chase | None) -> Diagnosis:
    """Assemble a Diagnosis from an engine's outcome."""
    verified = _infos(chain)
    served = _infos(ders)
    if state is not None:
        summary = from_chase(state, chain)
        added, failed = summary.added, summary.failed
        missing = tuple(dict.fromkeys(f"issuer of {a.for_subject}" for a in state.attempts))
    else:
        added, failed, missing = (), (), ()
    if not ok and code in MISSING_ISSUER and not missing:
        missing = (f"issuer of {served[depth].subject if depth < len(served) else '?'}",)
    fixed = "".join(c.pem for c in verified[:-1]) if ok else None
    return Diagnosis(
        label, hostname, at.isoformat() if at else None, served, missing, added, failed,
        ok, code, "ok" if ok else binding.verify_error_string(code), verified,
        state is not None, fixed,
    )
