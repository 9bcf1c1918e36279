"""The fallback engine's verifier: the served chain, completed by AIA, judged by OpenSSL.

Used where the native engine cannot bind (python-build-standalone as uv
installs it, static builds) or when ``AIA_EXT_ENGINE=fallback``.  A client
connection runs with OpenSSL's verification set aside for that one
connection, and its verifier (connection.py) has this module verify the
chain the server sent with ``X509_verify_cert`` of cryptography's OpenSSL
(openssl.py), set up as libssl sets up a client's verification: the trust
store of the connection's context, the verify flags, peer name and host
flags the connection was created with, the ``ssl_server`` purpose.  It runs
the same loop as the native C callback (csrc/verify.c): on a missing issuer
(codes 2 and 20) the chase supplies untrusted certificates and OpenSSL
verifies again; when no path is found the first verdict stands
(docs/design.md, invariant 2).

What the binding cannot express is applied here, in OpenSSL's order: the
security level (rules.py) and the interpreter's numbering of codes.
"""

from __future__ import annotations

import datetime
import functools
import ssl
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from ... import x509_codes as codes
from ...chase import core as chase
from ...chase import learned
from ...logtext import escape, get_logger
from ...stdlib_ssl import trust_sources
from . import failures, rules, verdicts
from .openssl import (
    Certificate,
    Config,
    Outcome,
    accepts_host,
    certificate,
    checks_subject_name,
    ip_of,
    verify,
)
from .state import security_level
from .trust_store import trust_set_for

if TYPE_CHECKING:
    from ...options import Options
    from .openssl import TrustSet

log = get_logger(__name__)

#: X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS: what CPython sets on every context,
#: for an interpreter whose context does not show its host flags.
_DEFAULT_HOSTFLAGS = 0x4
#: X509_CHECK_FLAG_ALWAYS_CHECK_SUBJECT and X509_CHECK_FLAG_NEVER_CHECK_SUBJECT
#: (include/openssl/x509v3.h); CPython sets the latter for
#: ``hostname_checks_common_name = False``.
_ALWAYS_CHECK_SUBJECT, _NEVER_CHECK_SUBJECT = 0x1, 0x20

#: Verdicts reached after OpenSSL's check_auth_level (x509_vfy.c, verify_chain:
#: host names, revocation, Suite B, signatures and times, name constraints,
#: RFC 3779, policies).  A chain refused for one of these with a key or digest
#: below the security level gets the security level's code, as OpenSSL would;
#: the rest (path building, check_extensions) come first.
AFTER_AUTH_LEVEL = frozenset({
    3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 23, 32, 33, 35, 36, 42, 43, 44, 45, 46,
    47, 48, 49, 50, 51, 52, 53, 54, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 76,
})


#: The interpreter's OpenSSL is 1.1.1 (its X509_STRICT list is 1.1.1's).
_OPENSSL_111 = ssl.OPENSSL_VERSION_INFO < (3,)

#: check_id's verdicts (the peer name), which a name checked here would replace.
CHECK_ID = frozenset({62, 63, 64})


@functools.lru_cache(maxsize=512)
def _loaded(der: bytes) -> Any:
    """cryptography's view of a certificate, for key sizes and validity windows."""
    from cryptography import x509

    with warnings.catch_warnings():  # other people's certificates, which OpenSSL reads
        warnings.simplefilter("ignore")
        return x509.load_der_x509_certificate(der)


class Request(NamedTuple):
    """What one verification is asked to check, besides the chain and the trust store.

    For a connection these are what ``SSL_new()`` copied from the context
    that created it (verify flags and host flags in its X509_VERIFY_PARAM,
    the peer name CPython set from ``check_hostname``) and its security
    level (connection.py); for ``diagnose()``, the context's settings now.
    """

    hostname: str | None  # the peer name to check; None when check_hostname was off
    flags: int  # verify_flags
    hostflags: int  # X509_CHECK_FLAG_*: CPython keeps its own copy (_host_flags)
    level: int  # the security level
    at: datetime.datetime | None = None  # verify at this time; None for now


def request_for(context: ssl.SSLContext, hostname: str | None,
                at: datetime.datetime | None = None) -> Request:
    """A request with ``context``'s settings now, checking ``hostname`` (diagnose())."""
    return Request(hostname, int(context.verify_flags),
                   int(getattr(context, "_host_flags", _DEFAULT_HOSTFLAGS)),
                   security_level(context), at)


def configuration(request: Request) -> tuple[Config, str | None]:
    """The verification parameters libssl would set for a client, and the peer name
    verify.py must check itself (one cryptography's OpenSSL refuses)."""
    host = ip = legacy = None
    hostname = request.hostname
    if hostname:
        ip = ip_of(hostname)
        host = hostname if ip is None else None
        if host is not None and not accepts_host(host):
            host, legacy = None, host
    flags = request.flags
    if _OPENSSL_111:
        # 1.1.1's X509_STRICT is a subset of any newer one: checked in Python
        # alone (rules.strict_code_111), not by cryptography's OpenSSL.
        flags &= ~ssl.VERIFY_X509_STRICT
    at = request.at
    return (Config(flags, host, ip, request.hostflags,
                   int(at.timestamp()) if at is not None else None), legacy)


def verify_chain(served: Sequence[bytes], trust: ssl.SSLContext, request: Request,
                 options: Options | None, synchronous: bool = True) -> tuple[int, list[bytes]]:
    """Verify ``served`` (DER, leaf first) against ``trust``'s trust store, completing
    it by AIA with ``options`` (None: as served, nothing is chased).

    ``synchronous``: the connection reads from its socket, not from a
    transport's memory BIO (chase/core.py, ``Chase.synchronous``).

    Returns (the chase id, 0 when no chase was needed; the verified chain,
    DER, leaf first); raises ``ssl.SSLCertVerificationError`` with OpenSSL's
    code when the chain does not verify.
    """
    hostname = request.hostname
    if not served:
        raise failures.ssl_style_error(codes.UNSPECIFIED, hostname,
                                        "the server sent no certificate")
    try:
        leaf = certificate(served[0])
    except ValueError as exc:
        raise failures.ssl_style_error(codes.UNSPECIFIED, hostname,
                                        f"unreadable certificate: {exc}") from None
    untrusted: list[Certificate] = []
    for der in served[1:]:
        try:
            untrusted.append(certificate(der))
        except ValueError:
            log.debug("fallback: a served certificate OpenSSL cannot read is left out")
    trust_set = trust_set_for(trust, trust_sources(trust))
    config, legacy_host = configuration(request)
    if (not config.hostflags & _NEVER_CHECK_SUBJECT and not checks_subject_name()
            and _by_subject_name(leaf.der)):
        # OpenSSL up to 4.0 reads a leaf's subject CN when it has no DNS name:
        # as the peer name, and against DNS name constraints (x509_vfy.c,
        # check_name_constraints: NAME_CONSTRAINTS_check_CN).  4.1 does so only
        # when asked to always check the subject, which for such a leaf is the
        # same thing (issue 30, item 4).
        config = config._replace(hostflags=config.hostflags | _ALWAYS_CHECK_SUBJECT)
    strict = bool(request.flags & ssl.VERIFY_X509_STRICT)
    judge = _Judge(trust_set, config, request.level, legacy_host, strict,
                   cache=request.at is None)

    # X509_verify_cert judges the leaf's key before anything else.
    outcome = _leaf_key(leaf, request.level)
    run: chase.Chase | None = None
    if outcome is None:
        outcome, last, run = _chase_loop(judge, leaf, untrusted, options, synchronous)
    code = failures.interpreter_code(outcome.code)
    if run is not None:
        # The report keeps the completed chain's verdict and path; the caller
        # gets the original one (invariant 2), as from csrc/verify.c.
        chase.finish(run.id, code == 0, failures.interpreter_code(last.code),
                     last.depth, last.chain)
    chase_id = run.id if run is not None else 0
    if code:
        log.debug("fallback: verification failed with %d at depth %d (%s)",
                  code, outcome.depth, escape(failures.message(code, hostname)))
        error = failures.ssl_style_error(code, hostname)
        error.aia_chase_id = chase_id  # type: ignore[attr-defined]  # for diagnose()
        error.aia_depth = outcome.depth  # type: ignore[attr-defined]
        raise error
    if options is not None:
        # A verified path teaches its intermediates (issue 23); learn() skips
        # those already known with one dictionary lookup each.
        learned.learn_path(outcome.chain, options)
    return chase_id, list(outcome.chain)


def _by_subject_name(der: bytes) -> bool:
    """Whether OpenSSL 3.x falls back to this leaf's subject: it has no DNS name in a
    subjectAltName (has_san_id(x, GEN_DNS); RFC 6125 section 6.4.4)."""
    from cryptography import x509

    try:
        san = _loaded(der).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return True
    except Exception:  # noqa: BLE001 - unreadable here: OpenSSL judges the name
        return False
    return not san.value.get_values_for_type(x509.DNSName)


def _leaf_key(leaf: Certificate, level: int) -> Outcome | None:
    if not level:
        return None
    try:
        cert = _loaded(leaf.der)
    except Exception:  # noqa: BLE001 - unreadable by cryptography: OpenSSL judges it
        return None
    if rules.leaf_key_code(cert, leaf.der, level):
        return Outcome(codes.EE_KEY_TOO_SMALL, 0, (leaf.der,), leaf.der)
    return None


def _chase_loop(judge: _Judge, leaf: Certificate, untrusted: list[Certificate],
                options: Options | None,
                synchronous: bool) -> tuple[Outcome, Outcome, chase.Chase | None]:
    """OpenSSL's verdict, chasing missing issuers between runs (csrc/verify.c, aia_chase):
    (the verdict to report, the last run's, the chase)."""
    run: chase.Chase | None = None
    present = {leaf.der, *(c.der for c in untrusted)}

    def add(der: bytes) -> int:
        if der in present:
            return 0  # no progress (cuts A->B->A loops)
        if len(untrusted) >= codes.MAX_UNTRUSTED:
            return -1
        try:
            untrusted.append(certificate(der))
        except ValueError:
            return -1
        present.add(der)
        return 1

    first = outcome = judge(leaf, untrusted)
    if options is None:
        return outcome, outcome, None  # aia_ext is not enabled where this connection is
    try:
        for _round in range(codes.MAX_ROUNDS):
            if outcome.code not in codes.MISSING_ISSUER:
                break
            if run is None:
                run, _ = chase.chase_for(0, options)
                run.synchronous = synchronous
            built = functools.partial(tuple, outcome.chain)  # the path so far, if asked
            if chase.on_missing_issuer(run, outcome.current or leaf.der, outcome.depth,
                                       outcome.code, add, built) <= 0:
                break
            outcome = judge(leaf, untrusted)
    except BaseException:  # an interrupt during a fetch: the chase ends, failed
        if run is not None:
            chase.finish(run.id, False, first.code, first.depth)
        raise
    last = outcome
    if outcome.code in codes.MISSING_ISSUER:
        # Still no path: the original verdict, never one about a certificate
        # a third party handed us (invariant 2).
        outcome = first
    return outcome, last, run


class _Judge:
    """One verification's settings; called once per round of the chase."""

    __slots__ = ("cache", "config", "legacy_host", "level", "store", "strict", "trust")

    def __init__(self, trust: TrustSet, config: Config, level: int, legacy_host: str | None,
                 strict: bool, cache: bool) -> None:
        self.trust = trust
        self.config = config
        self.level = level
        self.legacy_host = legacy_host
        self.strict = strict
        self.cache = cache  # verdicts are cached for "now" only
        self.store = trust.store(config)

    def __call__(self, leaf: Certificate, untrusted: Sequence[Certificate]) -> Outcome:
        key = (leaf.der, tuple(c.der for c in untrusted), self.config, self.level,
               self.legacy_host, self.strict, self.trust.generation)
        if self.cache:
            chain = verdicts.get(key)
            if chain is not None:
                # Not logged: the hot path says what aia_ext did, not that it
                # had nothing to do (issue 30, item 6).
                return Outcome(0, 0, chain, None)
        outcome = self._strength(verify(self.store, leaf, untrusted))
        if outcome.code == 0 and self.cache:
            _remember(key, outcome.chain)
        return outcome

    def _strength(self, outcome: Outcome) -> Outcome:
        """The interpreter's X509_STRICT list, then check_auth_level, in their places:
        after path building and before everything in AFTER_AUTH_LEVEL (rules.py)."""
        strict = self.strict
        if not (self.level or strict or self.legacy_host) or not outcome.chain:
            return outcome
        if outcome.code and outcome.code not in AFTER_AUTH_LEVEL:
            return outcome
        try:
            code, depth = self._python_checks(outcome, strict)
        except Exception as exc:  # noqa: BLE001 - cryptography cannot read what OpenSSL did
            if outcome.code:
                return outcome
            # Fail closed: a check that cannot run never passes (invariant 4).
            log.debug("fallback: a check OpenSSL's binding lacks could not run: %s", escape(exc))
            code, depth = codes.UNSPECIFIED, 0
        if not code:
            return outcome
        return Outcome(code, depth, outcome.chain, outcome.chain[depth])

    def _python_checks(self, outcome: Outcome, strict: bool) -> tuple[int, int]:
        path = [_loaded(der) for der in outcome.chain]
        if not strict:
            code, depth = 0, 0
        elif _OPENSSL_111:
            code, depth = rules.strict_code_111(path)
        else:
            code, depth = rules.strict_code(path, outcome.chain)
        if not code:
            code, depth = rules.strength_code(path, outcome.chain, self.level)
        if (not code and self.legacy_host is not None and outcome.code not in CHECK_ID
                and not rules.legacy_host_matches(path[0], self.legacy_host,
                                                  self.config.hostflags)):
            code, depth = codes.HOSTNAME_MISMATCH, 0  # check_id comes next in OpenSSL
        return code, depth


def _remember(key: tuple[object, ...], chain: tuple[bytes, ...]) -> None:
    try:
        certs = [_loaded(d) for d in chain]
        not_before = max(c.not_valid_before_utc.timestamp() for c in certs)
        not_after = min(c.not_valid_after_utc.timestamp() for c in certs)
    except Exception:  # noqa: BLE001 - not cached: verified again next time
        return
    verdicts.put(key, chain, not_before, not_after)
