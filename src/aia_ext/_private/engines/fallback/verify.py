"""The fallback engine's verifier: the served chain, completed by AIA, checked by cryptography.

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
where one matches (docs/engines.md lists the mapping).
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import ipaddress
import logging
import ssl
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.verification import PolicyBuilder, VerificationError

from ... import x509_codes as codes
from ...chase import core as chase
from ...der import DERError, ParsedCertificate, names_match, parse_certificate
from ...x509_codes import verification_error
from . import rules, verdicts
from .trust_store import TrustStore, load_certificate, store_for

if TYPE_CHECKING:
    from ...options import Options

log = logging.getLogger(__name__)


# ---- Verification --------------------------------------------------------

#: Certificates larger than this are parsed on every use rather than cached:
#: real ones are 1-2 KiB, and the caches' memory must stay bounded whatever
#: servers send (3 caches x 512 entries x 16 KiB at most).
_CACHED_CERT_BYTES = 16 * 1024


def _cached(function: Any) -> Any:
    cached = functools.lru_cache(maxsize=512)(function)

    @functools.wraps(function)
    def lookup(der: bytes) -> Any:
        return cached(der) if len(der) <= _CACHED_CERT_BYTES else function(der)

    return lookup


@_cached
def _parsed(der: bytes) -> ParsedCertificate:
    """Served certificates repeat on every connection: parsed once."""
    return parse_certificate(der)


@_cached
def _loaded(der: bytes) -> Any:
    return load_certificate(der)


@_cached
def _key_ids(der: bytes) -> tuple[bytes | None, bytes | None]:
    """(authority key identifier, subject key identifier) of a certificate."""
    try:
        cert = _loaded(der)
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
          trust: TrustStore) -> tuple[str, ParsedCertificate, int]:
    """Build the path upwards from the leaf as OpenSSL's build_chain would.

    Returns (outcome, last certificate, its depth), the outcome being
    "anchored" (an issuer is a trust anchor), "self-signed" (the path ends at
    an untrusted self-signed certificate) or "missing" (no issuer at all).
    """
    current, depth, seen = leaf, 0, {leaf.der}
    while depth < 16:
        if _issued(current, current):
            # A self-signed certificate is trusted only as itself (OpenSSL's
            # lookup_cert_match), never because an anchor shares its name.
            outcome = "anchored" if current.der in trust.anchor_ders else "self-signed"
            return outcome, current, depth
        if any(_issued(current, a) for a in trust.candidates(current.issuer)):
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
            loaded = _loaded(cert.der)
            if now > loaded.not_valid_after_utc.timestamp():
                return codes.CERT_HAS_EXPIRED
            if now < loaded.not_valid_before_utc.timestamp():
                return codes.CERT_NOT_YET_VALID
        return codes.CERT_HAS_EXPIRED
    if "subjectaltname" in text or "hostname" in text:
        return codes.HOSTNAME_MISMATCH
    if "too weak" in text:  # a key below cryptography's own floor (the leaf's is judged first)
        return codes.CA_KEY_TOO_SMALL
    if "forbidden" in text and "algorithm" in text:  # e.g. a SHA-1 signature
        return codes.CA_MD_TOO_WEAK
    if "signature" in text:
        return codes.CERT_SIGNATURE_FAILURE
    if "eku" in text or "extended key usage" in text:
        return codes.INVALID_PURPOSE
    if ("basicconstraints" in text or "ca certificate" in text
            or "missing required extension" in text):  # cryptography < 44's wording
        return codes.INVALID_CA
    if "path length" in text:
        return codes.PATH_LENGTH_EXCEEDED
    if "name constraint" in text:
        return codes.EXCLUDED_VIOLATION if "excluded" in text else codes.PERMITTED_VIOLATION
    if "all candidates exhausted" in text or "no interior errors" in text:
        return codes.UNABLE_TO_GET_ISSUER_CERT_LOCALLY
    return codes.UNSPECIFIED


def _to_self_signed(anchor: Any, trust: TrustStore) -> list[Any] | None:
    """Without PARTIAL_CHAIN, OpenSSL goes on from a trusted certificate that is not
    self-signed to its own trusted issuer; the certificates that takes, or None."""
    path: list[Any] = []
    current = anchor
    for _ in range(8):
        issuer_name = current.issuer.public_bytes()
        found = None
        for candidate in trust.candidates(issuer_name):
            cert = trust.loaded.get(candidate.der)
            if cert is None or cert is current or not rules.akid_matches(current, cert):
                continue
            try:
                current.verify_directly_issued_by(cert)
            except Exception:  # noqa: BLE001, S112 - not its issuer (signature, name or type)
                continue
            found = cert
            break
        if found is None:
            return None
        path.append(found)
        if rules.self_signed(found):
            return path
        current = found
    return None


def _judge(path: list[Any], context: ssl.SSLContext, hostname: str | None,
           trust: TrustStore, level: int) -> tuple[int, list[bytes]]:
    """OpenSSL's checks beyond cryptography's on a validated path (rules.py):
    (code, the path as OpenSSL would build it, DER, leaf first)."""
    flags = context.verify_flags
    if not flags & rules.PARTIAL_CHAIN and not rules.self_signed(path[-1]):
        rest = _to_self_signed(path[-1], trust)
        if rest is None:
            return codes.UNABLE_TO_GET_ISSUER_CERT, []
        path = [*path, *rest]
    ders = [c.public_bytes(Encoding.DER) for c in path]
    code = rules.strict_code(path, ders) if flags & ssl.VERIFY_X509_STRICT else 0
    # OpenSSL's order: extensions, key and digest levels, name constraints, host.
    return (code or rules.strength_code(path, level) or rules.name_constraints_code(path)
            or rules.host_code(path[0], hostname), ders)


def verify_chain(served: list[bytes], context: ssl.SSLContext, hostname: str | None,
                 options: Options, default_paths: bool, capaths: tuple[str, ...],
                 at: datetime.datetime | None = None) -> tuple[int, list[bytes]]:
    """Verify ``served`` (DER, leaf first), completing it by AIA.

    Returns (the chase id, 0 when no chase was needed; the verified
    chain, DER, leaf first); raises ``ssl.SSLCertVerificationError`` when the
    chain does not verify.
    """

    if not served:
        raise verification_error(codes.UNSPECIFIED, "the server sent no certificate")
    refusal = rules.refuse_crl_flags(context)
    if refusal is not None:
        raise verification_error(codes.UNABLE_TO_GET_CRL, refusal)
    now = at is None
    at = at or datetime.datetime.now(datetime.timezone.utc)
    try:
        leaf = _parsed(served[0])
        # The intermediates pool is consulted by the chase, as in the native
        # engine, so that reports show it as the source.
        pool = [_parsed(d) for d in served[1:]]
    except DERError as exc:
        raise verification_error(codes.UNSPECIFIED, f"unreadable certificate: {exc}") from None
    trust = store_for(context, default_paths, capaths)

    state: chase.Chase | None = None

    def add(der: bytes) -> int:
        if any(c.der == der for c in pool) or der == leaf.der:
            return 0
        try:
            pool.append(_parsed(der))
        except DERError:
            return -1
        return 1

    code = 0
    cause: Exception | None = None
    verified: list[bytes] = []
    try:
        for _round in range(codes.MAX_ROUNDS):
            outcome, cert, depth = _walk(leaf, pool, trust)
            if outcome != "missing":
                break
            if state is None:
                state, _ = chase.chase_for(0, options)
            if chase.on_missing_issuer(state, cert.der, depth,
                                       codes.UNABLE_TO_GET_ISSUER_CERT_LOCALLY, add) <= 0:
                break
    except BaseException:  # an interrupt during a fetch: the chase ends, failed
        if state is not None:
            chase.finish(state.id, False, codes.UNABLE_TO_GET_ISSUER_CERT_LOCALLY, 0)
        raise
    if outcome == "missing":
        # No path to a trust anchor: the original verdict, as in the native engine.
        code = codes.UNABLE_TO_GET_ISSUER_CERT_LOCALLY
    elif outcome == "self-signed":
        code = (codes.DEPTH_ZERO_SELF_SIGNED_CERT if depth == 0
                else codes.SELF_SIGNED_CERT_IN_CHAIN)
    elif trust.store is None:
        code = codes.UNABLE_TO_GET_ISSUER_CERT_LOCALLY
    else:
        level = rules.security_level(context)
        key = (leaf.der, *(c.der for c in pool), hostname, context.verify_flags, level,
               trust.generation)
        cached = verdicts.get(key) if now else None
        if cached is not None:
            log.debug("fallback: verdict from the cache (a path of %d)", len(cached))
            verified = list(cached)
        else:
            code, verified, cause = _verify_path(leaf, pool, context, hostname, trust, level, at)
            if not code and now:
                _remember(key, verified)
    if state is not None:
        chase.finish(state.id, code == 0, code or 0, 0)
    chase_id = state.id if state is not None else 0
    if code:
        error = verification_error(code)
        error.aia_chase_id = chase_id  # type: ignore[attr-defined]  # for diagnose()
        raise error from cause
    return chase_id, verified


def _verify_path(leaf: ParsedCertificate, pool: list[ParsedCertificate],
                 context: ssl.SSLContext, hostname: str | None, trust: TrustStore,
                 level: int, at: datetime.datetime
                 ) -> tuple[int, list[bytes], Exception | None]:
    """cryptography's verifier, then OpenSSL's own checks: (code, verified DER, cause)."""
    subject: Any = None
    try:
        leaf_cert = _loaded(leaf.der)
        # X509_verify_cert judges the leaf's key before building anything.
        code = rules.leaf_key_code(leaf_cert, level)
        if code:
            return code, [], None
        subject = _subject(hostname) if hostname else _any_subject(leaf)
        assert trust.store is not None  # verify_chain answers an empty store itself
        builder = PolicyBuilder().store(trust.store).time(at)
        path = builder.build_server_verifier(subject).verify(
            leaf_cert, [_loaded(c.der) for c in pool])
        code, verified = _judge(list(path), context, hostname, trust, level)
    except VerificationError as exc:
        code = _classify(str(exc), [leaf, *pool], at)
        if code == codes.HOSTNAME_MISMATCH and isinstance(subject, x509.IPAddress):
            code = codes.IP_ADDRESS_MISMATCH  # as OpenSSL reports an IP check
        log.debug("fallback: verification failed (%s): %s", code, exc)
        return code, [], None
    except Exception as exc:  # noqa: BLE001 - e.g. ValueError for a name it cannot take
        # Whatever the verifier cannot judge is a failure (fail closed).
        log.debug("fallback: the verifier raised %s: %s", type(exc).__name__, exc)
        return codes.UNSPECIFIED, [], exc
    if code:
        log.debug("fallback: refused as OpenSSL would (%s)", code)
        return code, [], None
    return 0, verified, None


def _remember(key: tuple[object, ...], verified: list[bytes]) -> None:
    certs = [_loaded(d) for d in verified]
    verdicts.put(key, tuple(verified),
                 max(c.not_valid_before_utc.timestamp() for c in certs),
                 min(c.not_valid_after_utc.timestamp() for c in certs))


def _subject(hostname: str) -> Any:
    try:
        return x509.IPAddress(ipaddress.ip_address(hostname.strip("[]")))
    except ValueError:
        return x509.DNSName(hostname)


def _any_subject(leaf: ParsedCertificate) -> Any:
    """With check_hostname off, any name of the leaf: the path is what is judged."""
    cert = _loaded(leaf.der)
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        for name in names:
            if isinstance(name, (x509.DNSName, x509.IPAddress)):
                return name
    except x509.ExtensionNotFound:
        pass
    return x509.DNSName("invalid.invalid")
