"""``diagnose()``: why a chain does or does not verify, and what the server should send.

The served chain is verified through the same C chase as a handshake, on an
enabled context built from the caller's trust arguments and options, so the
limits apply and fetched certificates are never trust anchors.  The only
difference from a handshake is that verification runs offline (on the chain
recorded from the server, or read from a file), which also allows ``at``.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import os
import socket
import ssl
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Union

from .errors import missing_cryptography

try:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.serialization import Encoding
except ImportError as exc:  # PyPy 3.10+ without the [cryptography] extra (issue 16)
    raise missing_cryptography("aia_ext.diagnose() and `aia-ext check`", exc) from exc


from . import binding, engines
from .api import create_default_context_with
from .bundle import BundleError, certificates_in_bundle
from .chase import finished
from .der import DERError, parse_certificate
from .errors import DiagnosisError, TargetUnreachable
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
    #: The names the certificate holds (subjectAltName), for hostname findings.
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()
    is_ca: bool = False

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
    #: Depth of the certificate the verify code concerns (0: leaf), in the chain
    #: as completed: where OpenSSL stopped on it (``failed_path``), as
    #: ``openssl verify`` with the fetched intermediates would say.
    verify_depth: int = 0
    #: Certificates of the context's trust store that the served chain includes
    #: (a server should not send its root), by SHA-256.
    trusted_served: tuple[str, ...] = ()
    #: When verification failed after AIA added certificates: the path OpenSSL
    #: built before it stopped (leaf first); else empty.
    failed_path: tuple[CertificateInfo, ...] = ()


def _info(cert: x509.Certificate) -> CertificateInfo:
    der = cert.public_bytes(Encoding.DER)
    try:
        urls = parse_certificate(der).ca_issuers
    except DERError:
        urls = ()
    dns: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()
    is_ca = False
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = tuple(san.get_values_for_type(x509.DNSName))
        ips = tuple(str(ip) for ip in san.get_values_for_type(x509.IPAddress))
    except (x509.ExtensionNotFound, ValueError):
        pass
    try:
        is_ca = bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except (x509.ExtensionNotFound, ValueError):
        pass
    return CertificateInfo(
        cert.subject.rfc4514_string(), cert.issuer.rfc4514_string(),
        _utc(cert, "not_valid_before"), _utc(cert, "not_valid_after"),
        cert.fingerprint(hashes.SHA256()).hex(), urls, der, dns, ips, is_ca,
    )


def _utc(cert: x509.Certificate, field: str) -> str:
    value = getattr(cert, f"{field}_utc", None)  # cryptography >= 42
    if value is None:  # pragma: no cover - older cryptography
        value = getattr(cert, field).replace(tzinfo=datetime.timezone.utc)
    return str(value.isoformat())


def _infos(ders: list[bytes] | tuple[bytes, ...]) -> tuple[CertificateInfo, ...]:
    return tuple(_info_of(der) for der in ders)


@functools.lru_cache(maxsize=4096)
def _info_of(der: bytes) -> CertificateInfo:
    """A certificate described once: a fleet's chains share their CAs (aia-ext check -j)."""
    # These are other people's certificates, which OpenSSL has accepted;
    # cryptography's stricter parser may warn about (real roots with a
    # non-positive serial) or one day refuse them.  Neither is ours to raise.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return _info(x509.load_der_x509_certificate(der))
        except Exception as exc:  # noqa: BLE001
            reason = f"(not readable by cryptography: {exc})"
    return CertificateInfo(reason, reason, "", "", hashlib.sha256(der).hexdigest(), (), der)


def _certificates_from_data(data: bytes, source: str) -> list[bytes]:
    try:
        return [c.der for c in certificates_in_bundle(data, MAX_CHAIN + 1)]
    except BundleError as exc:
        raise DiagnosisError(f"{source} holds no readable certificate ({exc})") from None


#: Protocols whose STARTTLS the standard library speaks, and their default ports.
STARTTLS_PORTS = {"smtp": 25, "imap": 143, "pop3": 110}


def _record_served_chain(host: str, port: int, server_name: str | None, *,
                         connect_to: tuple[str, int] | None = None,
                         starttls: str | None = None,
                         client_cert: tuple[str, str | None] | None = None,
                         timeout: float = CONNECT_TIMEOUT) -> list[bytes]:
    """The chain the server sends, recorded without verifying it.

    ``connect_to`` reaches another address while the name (SNI) stays the
    target's; ``starttls`` upgrades a plain smtp, imap or pop3 session first.
    """
    recorder = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    recorder.check_hostname = False
    recorder.verify_mode = ssl.CERT_NONE  # only to record; verification is done below
    if client_cert is not None:
        try:
            recorder.load_cert_chain(client_cert[0], client_cert[1])
        except (OSError, ssl.SSLError) as exc:
            raise DiagnosisError(f"--cert {client_cert[0]}: {exc}") from None
    address = connect_to or (host, port)
    where = f"{host}:{port}" + (f" (at {address[0]}:{address[1]})" if connect_to else "")
    try:
        if starttls is not None:
            return _starttls_chain(starttls, address, recorder, server_name or host, timeout)
        with socket.create_connection(address, timeout=timeout) as raw, \
                recorder.wrap_socket(raw, server_hostname=server_name) as tls:
            return binding.served_chain(tls)
    except socket.gaierror as exc:
        raise TargetUnreachable(f"cannot resolve {address[0]}: {exc.strerror or exc}") from None
    except (OSError, ssl.SSLError, EOFError) as exc:
        raise TargetUnreachable(f"cannot reach {where}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - smtplib/imaplib/poplib protocol errors
        raise TargetUnreachable(f"cannot reach {where}: {type(exc).__name__}: {exc}") from None


def _starttls_chain(protocol: str, address: tuple[str, int], recorder: ssl.SSLContext,
                    server_name: str, timeout: float) -> list[bytes]:
    """Upgrade a plain session with the standard library's own client, then record."""
    host, port = address
    # The clients are imported here: only --starttls needs one.
    if protocol == "smtp":
        import smtplib

        with smtplib.SMTP(host, port, timeout=timeout) as smtp:
            smtp._host = server_name  # type: ignore[attr-defined]  # what starttls() sends as SNI
            smtp.starttls(context=recorder)
            return binding.served_chain(smtp.sock)
    if protocol in ("imap", "pop3"):
        import imaplib
        import poplib

        session: Any = (imaplib.IMAP4(host, port, timeout=timeout) if protocol == "imap"
                        else poplib.POP3(host, port, timeout=timeout))
        try:
            session.host = server_name  # what starttls()/stls() send as SNI
            if protocol == "imap":
                session.starttls(ssl_context=recorder)
            else:
                session.stls(context=recorder)
            return binding.served_chain(session.sock)
        finally:
            session.shutdown() if protocol == "imap" else session.close()
    raise DiagnosisError(f"--starttls: {protocol!r} is not one of {', '.join(STARTTLS_PORTS)}")


def _parse_target(target: Target,
                  default_port: int = 443) -> tuple[str, list[bytes] | None, str | None, int]:
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
        host, port = parse_host_port(text, default_port=default_port)
    except ValueError as exc:
        if os.sep in text and not looks_like_url(text):
            raise DiagnosisError(f"{text}: no such file, and not an https:// URL or "
                                 "host[:port]") from None
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
    connect_to: str | None = None,
    connect_timeout: float = CONNECT_TIMEOUT,
    starttls: str | None = None,
    client_cert: tuple[str, str | None] | None = None,
    context: ssl.SSLContext | None = None,
    **options: Unpack[OptionsKwargs],
) -> Diagnosis:
    """Explain whether ``target``'s chain verifies, and what fixes it.

    ``target`` is an ``https://`` URL or ``host[:port]`` (connect, record the
    chain the server sends, then complete and verify it), or a certificate as
    a path or bytes, PEM or DER, one certificate or a bundle with the leaf
    first (complete and verify it offline).  ``hostname`` defaults to the URL's
    host; ``at`` (an aware datetime) verifies as of that time instead of now.
    For a server: ``connect_to`` ("host[:port]") is where to connect while the
    name stays the target's, ``connect_timeout`` bounds connecting and the
    handshake, ``starttls`` ("smtp", "imap" or "pop3") upgrades a plain session,
    ``client_cert`` is (certificate file, key file or None).  ``context``, an
    enabled context, replaces the one built from ``cafile``/``capath``/options
    (to reuse one across many targets).

    :raises DiagnosisError: (a ValueError and an AIAError) for a target that
        cannot be read; its subclass TargetUnreachable for one that cannot be reached.
    :raises ValueError: ``at`` is not timezone-aware, or an option is out of range.
    """
    if at is not None and (not isinstance(at, datetime.datetime) or at.tzinfo is None):
        raise ValueError("at must be a timezone-aware datetime")
    if context is None:
        context = create_default_context_with(ssl.Purpose.SERVER_AUTH, cafile, capath, None,
                                              make_options(options))
    elif engines.enabled_engine(context) is None:
        raise ValueError("context must be enabled (aia_ext.create_default_context())")
    if starttls is not None and starttls not in STARTTLS_PORTS:
        raise ValueError(f"starttls must be one of {', '.join(STARTTLS_PORTS)}, not {starttls!r}")
    default_port = STARTTLS_PORTS[starttls] if starttls else 443
    label, ders, host, port = _parse_target(target, default_port=default_port)
    if ders is None:
        assert host is not None
        hostname = hostname or host
        address = None
        if connect_to is not None:
            try:
                address = parse_host_port(connect_to, default_port=port)
            except ValueError as exc:
                raise DiagnosisError(f"--connect-to: {exc}") from None
        ders = _record_served_chain(host, port, None if is_ip_literal(hostname) else hostname,
                                    connect_to=address, starttls=starttls,
                                    client_cert=client_cert, timeout=connect_timeout)
        if not ders:
            raise TargetUnreachable(f"{host}:{port} sent no certificate")
    if len(ders) > MAX_CHAIN:
        raise DiagnosisError(f"more than {MAX_CHAIN} certificates given")
    engine = engines.enabled_engine(context)
    assert engine is not None, "create_default_context() enables its context"
    try:
        outcome = engine.verify_offline(context, ders, hostname, at)
    except ValueError as exc:
        raise DiagnosisError(str(exc)) from None
    state = finished.get(outcome.chase_id) if outcome.chase_id else None
    return _result(context, label, hostname, at, ders, outcome.chain, outcome.ok, outcome.code,
                   outcome.depth, state)


def _result(context: ssl.SSLContext, label: str, hostname: str | None,
            at: datetime.datetime | None,
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
    failed_path: tuple[CertificateInfo, ...] = ()
    if (not ok and state is not None and state.added and state.built
            and code in MISSING_ISSUER and state.error in MISSING_ISSUER):
        # OpenSSL's verdict on the completed chain (issue 25): the issuer
        # missing is the top added certificate's, not the leaf's.
        failed_path, depth = _infos(state.built), state.depth
    fixed = "".join(c.pem for c in verified[:-1]) if ok else None
    return Diagnosis(
        label, hostname, at.isoformat() if at else None, served, missing, added, failed,
        ok, code, "ok" if ok else binding.verify_error_string(code), verified,
        state is not None, fixed, depth, _trusted(context, served), failed_path,
    )


def _trusted(context: ssl.SSLContext, served: tuple[CertificateInfo, ...]) -> tuple[str, ...]:
    """The served certificates that are in the context's trust store (by SHA-256)."""
    anchors = {hashlib.sha256(d).hexdigest() for d in context.get_ca_certs(binary_form=True)}
    return tuple(c.sha256 for c in served if c.sha256 in anchors)
