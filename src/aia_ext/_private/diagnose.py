"""``diagnose()``: why a chain does or does not verify, and what the server should send.

The served chain is verified through the same C chase as a handshake, on an
enabled context built from the caller's trust arguments and options, so the
limits apply and fetched certificates are never trust anchors.  The only
difference from a handshake is that verification runs offline (on the chain
recorded from the server, or read from a file), which also allows ``at``.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import re
import socket
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union
from urllib.parse import urlsplit

from .errors import AIAError

if TYPE_CHECKING:
    from cryptography.x509 import Certificate

    from .report import FailedURL, FetchedCertificate

__all__ = ["CertificateInfo", "Diagnosis", "DiagnosisError", "diagnose"]

log = logging.getLogger(__name__)

Target = Union[str, bytes, "os.PathLike[str]"]
_HOST_PORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::(\d{1,5}))?$")
#: Seconds to connect to and handshake with the diagnosed server.
CONNECT_TIMEOUT = 10.0


class DiagnosisError(AIAError, ValueError):
    """The target cannot be diagnosed: unreadable, not a certificate, unreachable..."""


@dataclass(frozen=True)
class CertificateInfo:
    """One certificate of a chain, with what a person needs to recognise it."""

    subject: str
    issuer: str
    not_before: str  # ISO 8601, UTC
    not_after: str
    sha256: str  # fingerprint, hex
    ca_issuers: tuple[str, ...]
    der: bytes

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
    fetched: tuple[FetchedCertificate, ...]
    failed: tuple[FailedURL, ...]
    verified: bool
    verify_code: int
    verify_message: str
    verified_chain: tuple[CertificateInfo, ...]
    chain_was_incomplete: bool
    #: Leaf and intermediates, in order, without the trust anchor: what the
    #: server should be configured to send.  None when the chain does not verify.
    fixed_chain_pem: str | None


def _info(cert: Certificate) -> CertificateInfo:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.serialization import Encoding

    from .der import DERError, parse_certificate

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


def _utc(cert: Certificate, field: str) -> str:
    value = getattr(cert, f"{field}_utc", None)  # cryptography >= 42
    if value is None:  # pragma: no cover - older cryptography
        value = getattr(cert, field).replace(tzinfo=datetime.timezone.utc)
    return str(value.isoformat())


def _infos(ders: list[bytes]) -> tuple[CertificateInfo, ...]:
    import hashlib
    import warnings

    from cryptography import x509

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
    from .errors import FetchError
    from .parse import parse_certificates

    begin = data.find(b"-----BEGIN")
    if begin > 0:  # text before the PEM, as `openssl x509 -text` writes it
        data = data[begin:]
    try:
        return [c.der for c in parse_certificates(data)]  # PEM, DER or PKCS#7
    except FetchError as exc:
        raise DiagnosisError(f"{source} holds no readable certificate ({exc.detail})") from None


def _served_chain(host: str, port: int, server_name: str | None) -> list[bytes]:
    """The chain the server sends, recorded without verifying it."""
    recorder = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    recorder.check_hostname = False
    recorder.verify_mode = ssl.CERT_NONE  # only to record; verification is done below
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT) as raw, \
                recorder.wrap_socket(raw, server_hostname=server_name) as tls:
            from . import native

            return native.served_chain(tls)
    except (OSError, ssl.SSLError) as exc:
        raise DiagnosisError(f"cannot reach {host}:{port}: {exc}") from None


def _parse_target(target: Target) -> tuple[str, list[bytes] | None, str | None, int]:
    """(label, certificates or None for a server, host, port)."""
    if isinstance(target, (bytes, bytearray)):
        return "<certificate data>", _certificates_from_data(bytes(target), "the data"), None, 0
    text = os.fspath(target)
    if text.lower().startswith("https://"):
        parts = urlsplit(text)
        try:
            port = parts.port or 443
        except ValueError:
            raise DiagnosisError(f"bad port in {text!r}") from None
        if not parts.hostname:
            raise DiagnosisError(f"no host in {text!r}")
        return text, None, parts.hostname, port
    if os.path.exists(text):
        try:
            with open(text, "rb") as f:
                data = f.read(10 * 1024 * 1024)
        except OSError as exc:
            raise DiagnosisError(f"cannot read {text}: {exc.strerror or exc}") from None
        return text, _certificates_from_data(data, text), None, 0
    match = _HOST_PORT.match(text)
    if match is None or "://" in text:
        raise DiagnosisError(f"{text!r} is not an https:// URL, host[:port] or certificate file")
    port = int(match.group(2) or 443)
    if not 0 < port < 65536:
        raise DiagnosisError(f"bad port in {text!r}")
    return text, None, match.group(1).strip("[]"), port


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def diagnose(
    target: Target,
    *,
    cafile: str | os.PathLike[str] | None = None,
    capath: str | os.PathLike[str] | None = None,
    hostname: str | None = None,
    at: datetime.datetime | None = None,
    **options: Any,
) -> Diagnosis:
    """Explain whether ``target``'s chain verifies, and what fixes it.

    ``target`` is an ``https://`` URL or ``host[:port]`` (connect, record the
    chain the server sends, then complete and verify it), or a certificate as
    a path or bytes, PEM or DER, one certificate or a bundle with the leaf
    first (complete and verify it offline).  ``hostname`` defaults to the URL's
    host; ``at`` (an aware datetime) verifies as of that time instead of now.
    Options are those of ``enable()``.  Raises DiagnosisError (a ValueError and
    an AIAError) for a target that cannot be read or reached.
    """
    from . import native
    from .context import create_default_context

    if at is not None and (not isinstance(at, datetime.datetime) or at.tzinfo is None):
        raise ValueError("at must be a timezone-aware datetime")
    context = create_default_context(cafile=cafile, capath=capath, **options)
    label, ders, host, port = _parse_target(target)
    if ders is None:
        assert host is not None
        hostname = hostname or host
        ders = _served_chain(host, port, None if _is_ip(hostname) else hostname)
        if not ders:
            raise DiagnosisError(f"{host}:{port} sent no certificate")
    if len(ders) > 64:
        raise DiagnosisError("more than 64 certificates given")

    if native.engine() == "fallback":
        return _diagnose_fallback(label, context, ders, hostname, at)
    return _diagnose_native(label, context, ders, hostname, at)


def _diagnose_native(label: str, context: ssl.SSLContext, ders: list[bytes],
                     hostname: str | None, at: datetime.datetime | None) -> Diagnosis:
    """diagnose() through the native engine: the C chase on an offline X509_STORE_CTX."""
    from . import chase, native
    from .context import token_of

    module = native.bind()
    ffi, lib = module.ffi, module.lib
    blobs = [ffi.from_buffer(d) for d in ders]
    is_ip = bool(hostname) and _is_ip(hostname or "")
    if not hostname:
        host = ffi.NULL
    else:
        host = hostname.encode() if is_ip else hostname.encode("idna")
    handle = lib.aia_ext_offline_new(
        native.ssl_ctx_pointer(context), ffi.new("const unsigned char *[]", blobs),
        ffi.new("size_t[]", [len(d) for d in ders]), len(ders), host, 1 if is_ip else 0,
        int(at.timestamp()) if at is not None else 0, 1 if at is not None else 0)
    if handle == ffi.NULL:
        raise DiagnosisError("OpenSSL could not load the chain (or allocate memory)")
    handle = ffi.gc(handle, lib.aia_ext_offline_free)
    session_id = ffi.new("uint64_t *")
    token = token_of(context)
    ok = bool(lib.aia_ext_offline_verify(handle, token, session_id))
    depth = ffi.new("int *")
    code = 0 if ok else int(lib.aia_ext_offline_error(handle, depth))
    chain = native.store_chain(lib.aia_ext_offline_store_ctx(handle)) if ok else []
    session = chase.finished(int(session_id[0])) if session_id[0] else None
    return _result(label, hostname, at, ders, chain, ok, code,
                   depth[0], session)


def _result(label: str, hostname: str | None, at: datetime.datetime | None,
            ders: list[bytes], chain: list[bytes], ok: bool, code: int, depth: int,
            session: Any) -> Diagnosis:
    """Assemble a Diagnosis from either engine's outcome."""
    from .report import from_session, verify_message

    verified = _infos(chain)
    served = _infos(ders)
    if session is not None:
        summary = from_session(session, tuple(chain))
        fetched, failed = summary.fetched, summary.failed
        missing = tuple(dict.fromkeys(f"issuer of {a.for_subject}" for a in session.attempts))
    else:
        fetched, failed, missing = (), (), ()
    if not ok and code in (2, 20) and not missing:
        missing = (f"issuer of {served[depth].subject if depth < len(served) else '?'}",)
    fixed = "".join(c.pem for c in verified[:-1]) if ok else None
    return Diagnosis(
        label, hostname, at.isoformat() if at else None, served, missing, fetched, failed,
        ok, code, "ok" if ok else verify_message(code), verified,
        session is not None, fixed,
    )


def _diagnose_fallback(label: str, context: ssl.SSLContext, ders: list[bytes],
                       hostname: str | None, at: datetime.datetime | None) -> Diagnosis:
    """diagnose() through the fallback engine's verifier (no reachable OpenSSL)."""
    from . import chase, fallback
    from .sslcontext import _fallback

    state = _fallback(context)
    assert state is not None
    try:
        session_id, chain = fallback.verify_chain(
            ders, context, hostname, state.options, state.default_paths,
            tuple(state.capaths), at)
        ok, code = True, 0
    except ssl.SSLCertVerificationError as exc:
        session_id, chain, ok, code = getattr(exc, "aia_session", 0), [], False, exc.verify_code
    session = chase.finished(session_id) if session_id else None
    return _result(label, hostname, at, ders, chain, ok, code, 0, session)
