"""The fallback engine's verifier: the served chain, completed by AIA, checked in Python.

Used where the native engine cannot bind (python-build-standalone as uv
installs it, static builds) or when ``AIA_EXT_ENGINE=fallback``.  The TLS
layer runs with OpenSSL's verification off for the connection; before the
handshake call returns, this module verifies the chain the server sent with
cryptography's X.509 verifier (``cryptography.x509.verification``), against
the context's own trust store, the hostname and the current time.  Missing
issuers come from the same chase as the native engine (pool, caches,
network, same limits), and are only ever intermediates handed to the
verifier, never anchors.

Verdicts are reported as ``ssl.SSLCertVerificationError`` with OpenSSL's code
where one matches (README.md, "Fallback engine" lists the mapping).
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import logging
import os
import ssl
import threading
import warnings
from typing import TYPE_CHECKING, Any

from .der import DERError, ParsedCertificate, names_match, parse_certificate

if TYPE_CHECKING:
    from .options import Options

__all__ = ["verification_error", "verify_chain"]

log = logging.getLogger(__name__)

# OpenSSL's X509_V_ERR_* codes and texts (x509_txt.c), for the verdicts the
# fallback can reach; X509_V_ERR_INVALID_CA moved from 24 to 79 in 3.0.
_INVALID_CA = 79 if ssl.OPENSSL_VERSION_INFO >= (3,) else 24
_TEXT = {
    1: "unspecified certificate verification error",
    7: "certificate signature failure",
    9: "certificate is not yet valid",
    10: "certificate has expired",
    18: "self-signed certificate",
    19: "self-signed certificate in certificate chain",
    20: "unable to get local issuer certificate",
    25: "path length constraint exceeded",
    26: "unsuitable certificate purpose",
    47: "permitted subtree violation",
    48: "excluded subtree violation",
    62: "hostname mismatch",
    _INVALID_CA: "invalid CA certificate",
}
#: Directory entries read from a capath (hashed CA directory) at most.
MAX_CAPATH_FILES = 10_000


def verification_error(code: int, detail: str = "") -> ssl.SSLCertVerificationError:
    """An SSLCertVerificationError shaped like the one _ssl raises for ``code``."""
    message = _TEXT.get(code, _TEXT[1])
    text = f"[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: {message}"
    if detail:
        text += f" ({detail})"
    error = ssl.SSLCertVerificationError(1, text)
    error.verify_code = code
    error.verify_message = message
    error.reason = "CERTIFICATE_VERIFY_FAILED"
    error.library = "SSL"
    return error


# ---- The trust store -----------------------------------------------------

_files_lock = threading.Lock()
_files_cache: dict[tuple[str, float, int], tuple[bytes, ...]] = {}


def _certificates_in_file(path: str) -> tuple[bytes, ...]:
    """DER certificates of one PEM/DER file, cached by path, mtime and size."""
    from .parse import _pem_ders

    try:
        stat = os.stat(path)
    except OSError:
        return ()
    key = (path, stat.st_mtime, stat.st_size)
    with _files_lock:
        cached = _files_cache.get(key)
    if cached is not None:
        return cached
    try:
        with open(path, "rb") as f:
            data = f.read(16 * 1024 * 1024)
    except OSError:
        return ()
    ders = tuple(_pem_ders(data) if b"-----BEGIN" in data else [data])
    with _files_lock:
        _files_cache[key] = ders
    return ders


def _certificates_in_directory(path: str) -> list[bytes]:
    # A capath is OpenSSL's hashed directory (`openssl rehash`): OpenSSL looks
    # certificates up lazily by subject hash, so get_ca_certs() never lists
    # them.  The fallback reads the directory's files once instead.
    ders: list[bytes] = []
    try:
        with os.scandir(path) as entries:
            for count, entry in enumerate(entries):
                if count >= MAX_CAPATH_FILES:
                    break
                if entry.is_file():
                    ders.extend(_certificates_in_file(entry.path))
    except OSError:
        pass
    return ders


def trust_anchors(context: ssl.SSLContext, default_paths: bool,
                  capaths: tuple[str, ...]) -> list[bytes]:
    """The context's CA certificates (DER): loaded ones, default paths, capaths."""
    ders = list(context.get_ca_certs(binary_form=True))
    directories = list(capaths)
    if default_paths:
        paths = ssl.get_default_verify_paths()
        if paths.cafile:
            ders.extend(_certificates_in_file(paths.cafile))
        if paths.capath:
            directories.append(paths.capath)
    for directory in directories:
        ders.extend(_certificates_in_directory(directory))
    return list(dict.fromkeys(ders))


# ---- Verification --------------------------------------------------------

def _load(der: bytes) -> Any:
    """cryptography's Certificate for ``der``, without its deprecation warnings.

    These are other people's certificates, which OpenSSL accepts; some real
    ones (a root with a non-positive serial) make cryptography warn.
    """
    from cryptography import x509

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return x509.load_der_x509_certificate(der)


def _key_ids(der: bytes) -> tuple[bytes | None, bytes | None]:
    """(authority key identifier, subject key identifier) of a certificate."""
    from cryptography import x509

    try:
        cert = _load(der)
    except Exception:  # noqa: BLE001 - unreadable: no identifiers to compare
        return None, None
    aki = ski = None
    with contextlib.suppress(Exception):  # absent or malformed: no identifier
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    with contextlib.suppress(Exception):
        ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return (aki.key_identifier if aki is not None else None,
            ski.digest if ski is not None else None)


def _issued(child: ParsedCertificate, parent: ParsedCertificate) -> bool:
    """Whether ``parent`` is a candidate issuer of ``child``, as OpenSSL decides it
    (X509_check_issued): the names match, and the child's authority key
    identifier, if any, equals the parent's subject key identifier, if any.

    A name alone is not enough: an attacker's self-signed certificate may carry
    a trusted root's name.  Signatures are the verifier's job, as in OpenSSL.
    """
    if not names_match(child.issuer, parent.subject):
        return False
    aki = _key_ids(child.der)[0]
    ski = _key_ids(parent.der)[1]
    return aki is None or ski is None or aki == ski


def _walk(leaf: ParsedCertificate, pool: list[ParsedCertificate],
          anchors: list[ParsedCertificate]) -> tuple[str, ParsedCertificate, int]:
    """Build the path upwards from the leaf as OpenSSL's build_chain would.

    Returns (outcome, last certificate, its depth), the outcome being
    "anchored" (an issuer is a trust anchor), "self-signed" (the path ends at
    an untrusted self-signed certificate) or "missing" (no issuer at all).
    """
    current, depth, seen = leaf, 0, {leaf.der}
    anchor_ders = {a.der for a in anchors}
    while depth < 16:
        if _issued(current, current):
            # A self-signed certificate is trusted only as itself (OpenSSL's
            # lookup_cert_match), never because an anchor shares its name.
            outcome = "anchored" if current.der in anchor_ders else "self-signed"
            return outcome, current, depth
        if any(_issued(current, a) for a in anchors):
            return "anchored", current, depth
        parent = next((c for c in pool if c.der not in seen and _issued(current, c)), None)
        if parent is None:
            return "missing", current, depth
        seen.add(parent.der)
        current, depth = parent, depth + 1
    return "missing", current, depth


def _classify(message: str, chain: list[ParsedCertificate], at: datetime.datetime) -> int:
    """OpenSSL's code for cryptography's VerificationError on an anchored path."""
    text = message.lower()
    if "not valid at validation time" in text:
        now = at.timestamp()

        for cert in chain:
            loaded = _load(cert.der)
            if now > loaded.not_valid_after_utc.timestamp():
                return 10
            if now < loaded.not_valid_before_utc.timestamp():
                return 9
        return 10
    if "subjectaltname" in text or "hostname" in text:
        return 62
    if "signature" in text:
        return 7
    if "eku" in text or "extended key usage" in text:
        return 26
    if "basicconstraints" in text or "ca certificate" in text:
        return _INVALID_CA
    if "path length" in text:
        return 25
    if "name constraint" in text:
        return 48 if "excluded" in text else 47
    if "all candidates exhausted" in text or "no interior errors" in text:
        return 20
    return 1


@functools.lru_cache(maxsize=16)
def _anchors(ders: tuple[bytes, ...]) -> tuple[list[ParsedCertificate], Any]:
    """Parsed anchors and cryptography's Store for one trust set, built once.

    A system store holds ~150 roots; parsing them on every handshake would
    cost milliseconds.  Some real roots trip cryptography's deprecation
    warnings (non-positive serials); they are the user's trust store, which
    OpenSSL accepts, so the warnings are not ours to raise.
    """
    from cryptography.x509.verification import Store

    parsed, loaded = [], []
    for der in ders:
        try:
            parsed.append(parse_certificate(der))
            loaded.append(_load(der))
        except Exception:  # noqa: BLE001 - DERError or cryptography's errors
            log.debug("fallback: skipping an unreadable trust anchor")
    return parsed, (Store(loaded) if loaded else None)


def verify_chain(served: list[bytes], context: ssl.SSLContext, hostname: str | None,
                 options: Options, default_paths: bool, capaths: tuple[str, ...],
                 at: datetime.datetime | None = None) -> tuple[int, list[bytes]]:
    """Verify ``served`` (DER, leaf first), completing it by AIA.

    Returns (the chase session id, 0 when no chase was needed; the verified
    chain, DER, leaf first); raises ``ssl.SSLCertVerificationError`` when the
    chain does not verify.
    """
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.verification import PolicyBuilder, VerificationError

    from . import chase

    if not served:
        raise verification_error(1, "the server sent no certificate")
    at = at or datetime.datetime.now(datetime.timezone.utc)
    try:
        leaf = parse_certificate(served[0])
        # The intermediates pool is consulted by the chase, as in the native
        # engine, so that reports show it as the source.
        pool = [parse_certificate(d) for d in served[1:]]
    except DERError as exc:
        raise verification_error(1, f"unreadable certificate: {exc}") from None
    anchors, store = _anchors(tuple(trust_anchors(context, default_paths, capaths)))

    session: chase.Session | None = None

    def add(der: bytes) -> int:
        if any(c.der == der for c in pool) or der == leaf.der:
            return 0
        try:
            pool.append(parse_certificate(der))
        except DERError:
            return -1
        return 1

    code = 0
    verified: list[bytes] = []
    for _round in range(32):
        outcome, cert, depth = _walk(leaf, pool, anchors)
        if outcome != "missing":
            break
        if session is None:
            session, _ = chase.session_for(0, options)
        if chase.missing(session, cert.der, depth, 20, add) <= 0:
            break
    if outcome == "missing":
        code = 20  # no path to a trust anchor: the original verdict, as in the native engine
    elif outcome == "self-signed":
        code = 18 if depth == 0 else 19
    elif store is None:
        code = 20
    else:
        builder = PolicyBuilder().store(store).time(at)
        subject: Any = _subject(hostname) if hostname else _any_subject(leaf)
        try:
            path = builder.build_server_verifier(subject).verify(
                _load(leaf.der), [_load(c.der) for c in pool])
            verified = [c.public_bytes(Encoding.DER) for c in path]
        except VerificationError as exc:
            code = _classify(str(exc), [leaf, *pool], at)
            log.debug("fallback: verification failed (%s): %s", code, exc)
    if session is not None:
        chase.done(session.id, code == 0, code or 0, 0)
    session_id = session.id if session is not None else 0
    if code:
        error = verification_error(code)
        error.aia_session = session_id  # type: ignore[attr-defined]  # for diagnose()
        raise error
    return session_id, verified


def _subject(hostname: str) -> Any:
    import ipaddress

    from cryptography import x509

    try:
        return x509.IPAddress(ipaddress.ip_address(hostname.strip("[]")))
    except ValueError:
        return x509.DNSName(hostname)


def _any_subject(leaf: ParsedCertificate) -> Any:
    """With check_hostname off, any name of the leaf: the path is what is judged."""
    from cryptography import x509

    cert = _load(leaf.der)
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        for name in names:
            if isinstance(name, (x509.DNSName, x509.IPAddress)):
                return name
    except x509.ExtensionNotFound:
        pass
    return x509.DNSName("invalid.invalid")
