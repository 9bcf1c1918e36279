"""The fallback engine's verifier: the served chain, completed by AIA, judged by OpenSSL.

Used where the native engine cannot bind (python-build-standalone as uv
installs it, static builds) or when ``AIA_EXT_ENGINE=fallback``.  The TLS
connection runs with OpenSSL's verification off for that one connection
(context.py); before the handshake call returns, this module verifies the
chain the server sent with ``X509_verify_cert`` of cryptography's OpenSSL
(openssl.py), set up as libssl sets up a client's verification: the
context's trust material, verify flags, peer name and host flags, the
``ssl_server`` purpose.  It runs the same loop as the native C callback
(csrc/verify.c): on a missing issuer (codes 2 and 20) the chase supplies
untrusted certificates and OpenSSL verifies again; when no path is found the
first verdict stands (docs/design.md, invariant 2).

What the binding cannot express is applied here, in OpenSSL's order: the
security level (rules.py) and the interpreter's numbering of codes.
"""

from __future__ import annotations

import datetime
import functools
import logging
import ssl
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ... import x509_codes as codes
from ...chase import core as chase
from ...chase import learned
from ...logtext import escape
from . import failures as errors
from . import rules, verdicts
from .openssl import Certificate, Config, Outcome, accepts_host, certificate, ip_of, verify
from .trust_store import trust_set_for

if TYPE_CHECKING:
    from ...options import Options
    from ...stdlib_ssl import TrustSources
    from .openssl import TrustSet

log = logging.getLogger(__name__)

#: X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS: what CPython sets on every context,
#: for an interpreter whose context does not show its host flags.
_DEFAULT_HOSTFLAGS = 0x4

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


def configuration(context: ssl.SSLContext, hostname: str | None,
                  at: datetime.datetime | None) -> tuple[Config, str | None]:
    """The verification parameters libssl would set for a client on ``context``, and
    the peer name verify.py must check itself (one cryptography's OpenSSL refuses)."""
    host = ip = legacy = None
    if hostname:
        ip = ip_of(hostname)
        host = hostname if ip is None else None
        if host is not None and not accepts_host(host):
            host, legacy = None, host
    hostflags = int(getattr(context, "_host_flags", _DEFAULT_HOSTFLAGS))
    flags = int(context.verify_flags)
    if _OPENSSL_111:
        # 1.1.1's X509_STRICT is a subset of any newer one: checked in Python
        # alone (rules.strict_code_111), not by cryptography's OpenSSL.
        flags &= ~ssl.VERIFY_X509_STRICT
    return (Config(flags, host, ip, hostflags,
                   int(at.timestamp()) if at is not None else None), legacy)


def verify_chain(served: Sequence[bytes], context: ssl.SSLContext, hostname: str | None,
                 options: Options, sources: TrustSources,
                 at: datetime.datetime | None = None) -> tuple[int, list[bytes]]:
    """Verify ``served`` (DER, leaf first), completing it by AIA.

    Returns (the chase id, 0 when no chase was needed; the verified chain,
    DER, leaf first); raises ``ssl.SSLCertVerificationError`` with OpenSSL's
    code when the chain does not verify.
    """
    if not served:
        raise errors.verification_error(codes.UNSPECIFIED, hostname,
                                        "the server sent no certificate")
    try:
        leaf = certificate(served[0])
    except ValueError as exc:
        raise errors.verification_error(codes.UNSPECIFIED, hostname,
                                        f"unreadable certificate: {exc}") from None
    untrusted: list[Certificate] = []
    for der in served[1:]:
        try:
            untrusted.append(certificate(der))
        except ValueError:
            log.debug("fallback: a served certificate OpenSSL cannot read is left out")
    trust = trust_set_for(context, sources)
    config, legacy_host = configuration(context, hostname, at)
    level = rules.security_level(context)
    strict = bool(context.verify_flags & ssl.VERIFY_X509_STRICT)
    judge = _Judge(trust, config, level, legacy_host, strict, cache=at is None)

    # X509_verify_cert judges the leaf's key before anything else.
    outcome = _leaf_key(leaf, level)
    state: chase.Chase | None = None
    if outcome is None:
        outcome, last, state = _chase_loop(judge, leaf, untrusted, options)
    code = errors.interpreter_code(outcome.code)
    if state is not None:
        # The report keeps the completed chain's verdict and path; the caller
        # gets the original one (invariant 2), as from csrc/verify.c.
        chase.finish(state.id, code == 0, errors.interpreter_code(last.code), last.depth,
                     last.chain)
    chase_id = state.id if state is not None else 0
    if code:
        log.debug("fallback: verification failed with %d at depth %d (%s)",
                  code, outcome.depth, escape(errors.message(code, hostname)))
        error = errors.verification_error(code, hostname)
        error.aia_chase_id = chase_id  # type: ignore[attr-defined]  # for diagnose()
        error.aia_depth = outcome.depth  # type: ignore[attr-defined]
        raise error
    # A verified path teaches its intermediates (issue 23); learn() skips
    # those already known with one dictionary lookup each.
    learned.learn_path(outcome.chain, options)
    return chase_id, list(outcome.chain)


def _leaf_key(leaf: Certificate, level: int) -> Outcome | None:
    if not level:
        return None
    try:
        cert = _loaded(leaf.der)
    except Exception:  # noqa: BLE001 - unreadable by cryptography: OpenSSL judges it
        return None
    if rules.leaf_key_code(cert, level):
        return Outcome(codes.EE_KEY_TOO_SMALL, 0, (leaf.der,), leaf.der)
    return None


def _chase_loop(judge: _Judge, leaf: Certificate, untrusted: list[Certificate],
                options: Options) -> tuple[Outcome, Outcome, chase.Chase | None]:
    """OpenSSL's verdict, chasing missing issuers between runs (csrc/verify.c, aia_chase):
    (the verdict to report, the last run's, the chase)."""
    state: chase.Chase | None = None
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
    try:
        for _round in range(codes.MAX_ROUNDS):
            if outcome.code not in codes.MISSING_ISSUER:
                break
            if state is None:
                state, _ = chase.chase_for(0, options)
            built = functools.partial(tuple, outcome.chain)  # the path so far, if asked
            if chase.on_missing_issuer(state, outcome.current or leaf.der, outcome.depth,
                                       outcome.code, add, built) <= 0:
                break
            outcome = judge(leaf, untrusted)
    except BaseException:  # an interrupt during a fetch: the chase ends, failed
        if state is not None:
            chase.finish(state.id, False, first.code, first.depth)
        raise
    last = outcome
    if outcome.code in codes.MISSING_ISSUER:
        # Still no path: the original verdict, never one about a certificate
        # a third party handed us (invariant 2).
        outcome = first
    return outcome, last, state


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
                log.debug("fallback: verdict from the cache (a path of %d)", len(chain))
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
            code, depth = rules.strength_code(path, self.level)
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
