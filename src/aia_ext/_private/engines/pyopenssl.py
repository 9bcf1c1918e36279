"""AIA chasing on pyOpenSSL contexts, through pyOpenSSL's supported API only.

pyOpenSSL uses the OpenSSL bundled inside cryptography, with hidden symbols,
so the native callback cannot be installed there.  Instead ``enable()`` sets
a verify callback (``Context.set_verify``).  OpenSSL calls it for each
verdict during the handshake; on a missing issuer (error 20 or 2) it:

1. fetches the issuers through the same chase (pool, caches, network,
   same limits and policy) as the other engines;
2. verifies again with pyOpenSSL's ``X509StoreContext`` over the context's
   own store (``Context.get_cert_store()``): OpenSSL's verification, the
   fetched certificates passed as untrusted chain only;
3. accepts only if that verification succeeds.

Every other verdict OpenSSL reports during the handshake (expiry, purpose,
hostname if configured, signatures) still fails it: the callback returns the
preverify result for them.
"""

from __future__ import annotations

import threading
import weakref

from .. import x509_codes as codes
from ..logtext import get_logger
from ..options import Options
from .base import ConnectionChase, OfflineResult, importable

TYPE_CHECKING = False  # typing's, without importing typing (~3 ms)
if TYPE_CHECKING:
    from typing import Any

    from .base import EngineName

if TYPE_CHECKING:
    import datetime

log = get_logger(__name__)

# X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE: once the callback overrides the
# missing issuer, OpenSSL goes on with the leaf alone and cannot check its
# signature.  A consequence of the same missing issuer, accepted only after the
# completed chain verified (which checked that signature).
_CONSEQUENCES = frozenset({codes.UNABLE_TO_VERIFY_LEAF_SIGNATURE})


def is_pyopenssl_context(obj: object) -> bool:
    """Whether ``obj`` is an ``OpenSSL.SSL.Context`` (without importing pyOpenSSL)."""
    cls = type(obj)
    return cls.__module__ == "OpenSSL.SSL" and cls.__name__ == "Context"


class PyOpenSSLEngine:
    """A verify callback through ``Context.set_verify`` (docs/engines.md)."""

    name: EngineName = "pyopenssl"
    needs_context_class = False

    def __init__(self) -> None:
        self._options: weakref.WeakKeyDictionary[Any, Options] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def available(self) -> bool:
        return importable("OpenSSL")

    def enable(self, context: Any, options: Options) -> None:
        """Set the AIA verify callback on an ``OpenSSL.SSL.Context``, keeping its mode."""
        if not is_pyopenssl_context(context):
            raise TypeError(f"expected an OpenSSL.SSL.Context, got {type(context).__name__}")
        from OpenSSL import SSL  # optional: present, since the caller holds its Context

        with self._lock:
            self._options[context] = options
        # The chase's outcome for a connection's handshake, so that it runs once
        # per handshake: OpenSSL calls back for every error of every certificate.
        # Keyed by the handshake too (issue 30): a TLS 1.2 renegotiation is
        # judged afresh, never answered from the connection's first handshake.
        outcomes: weakref.WeakKeyDictionary[Any, tuple[int, bool]] = (
            weakref.WeakKeyDictionary())
        engine = self

        def callback(conn: Any, cert: Any, errno: int, depth: int, ok: int) -> bool:
            if ok:
                return True
            if context.get_verify_mode() == SSL.VERIFY_NONE:
                return True  # nobody verifies: OpenSSL ignores the verdict; nothing is fetched
            handshake = _handshake_number(conn)
            known = outcomes.get(conn)
            decided = known[1] if known is not None and known[0] == handshake else None
            if errno in _CONSEQUENCES:
                return bool(decided)
            if errno not in codes.MISSING_ISSUER:
                return False  # any other verdict stands, as OpenSSL gave it
            if decided is None:
                current = engine.options_of(context)
                try:
                    decided = current is not None and _complete(conn, context, current, cert)
                except Exception:
                    log.exception("aia_ext: internal error while completing a pyOpenSSL chain")
                    decided = False
                outcomes[conn] = (handshake, decided)
            return decided

        context.set_verify(context.get_verify_mode(), callback)  # the caller's mode, unchanged

    def disable(self, context: Any) -> bool:
        """Remove the AIA callback; OpenSSL's own verdicts apply alone again."""
        with self._lock:
            if self._options.pop(context, None) is None:
                return False
        context.set_verify(context.get_verify_mode(), None)
        return True

    def is_enabled(self, context: Any) -> bool:
        with self._lock:
            return is_pyopenssl_context(context) and context in self._options

    def options_of(self, context: Any) -> Options | None:
        with self._lock:
            return self._options.get(context) if is_pyopenssl_context(context) else None

    def chase_of(self, conn: object) -> ConnectionChase | None:
        return None  # pyOpenSSL connections carry no report

    def verify_offline(self, context: Any, ders: list[bytes], hostname: str | None,
                       at: datetime.datetime | None) -> OfflineResult:
        raise NotImplementedError("diagnose() verifies with the engine of ssl contexts")


def _handshake_number(conn: Any) -> int:
    """Which handshake of the connection this is: SSL_total_renegotiations counts the
    renegotiations started, the client's included when a server asked for one."""
    try:
        return int(conn.total_renegotiations())
    except Exception:  # noqa: BLE001 - unknown: every callback judges afresh
        return -1


def _complete(conn: Any, context: Any, options: Options, missing: Any) -> bool:
    """Fetch missing issuers and verify the completed chain with OpenSSL."""
    # pyOpenSSL is optional, and cryptography costs ~50 ms of import: both
    # only once a pyOpenSSL chain is actually incomplete.
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding
    from OpenSSL import crypto

    from ..chase import core as chase  # the fetch path: imported on the first incomplete chain

    served = conn.get_peer_cert_chain() or []  # pyOpenSSL X509 objects, leaf first
    if not served:
        return False
    chain = [c.to_cryptography().public_bytes(Encoding.DER) for c in served]
    if missing.to_cryptography().public_bytes(Encoding.DER) not in chain:
        # The certificate whose issuer is missing is one the server sent; if
        # it is not in this chain, the chain is another handshake's: nothing
        # is completed, and OpenSSL's verdict stands.
        return False
    leaf = served[0]
    untrusted = list(served[1:])
    ders = set(chain)

    def add(der: bytes) -> int:
        if der in ders:
            return 0
        try:
            untrusted.append(crypto.X509.from_cryptography(x509.load_der_x509_certificate(der)))
        except Exception:  # noqa: BLE001 - unusable certificate
            return -1
        ders.add(der)
        return 1

    state, _ = chase.chase_for(0, options)
    # A Connection made without a socket reads from a memory BIO (an asyncio
    # or Twisted transport); with one, its caller blocks (chase/core.py).
    state.synchronous = conn.get_socket() is not None if hasattr(conn, "get_socket") else True
    ok, code, depth = False, codes.UNABLE_TO_GET_ISSUER_CERT_LOCALLY, 0
    verified: list[bytes] = []
    try:
        for _round in range(codes.MAX_ROUNDS):
            store_ctx = crypto.X509StoreContext(context.get_cert_store(), leaf, untrusted)
            try:
                path = store_ctx.get_verified_chain()
                ok, code = True, 0
                verified = [c.to_cryptography().public_bytes(Encoding.DER) for c in path]
                break
            except crypto.X509StoreContextError as exc:
                code, depth = int(exc.errors[0]), int(exc.errors[1])
                if code not in codes.MISSING_ISSUER:
                    break  # the completed chain has a real verdict
                missing = exc.certificate.to_cryptography().public_bytes(Encoding.DER)
                if chase.on_missing_issuer(state, missing, depth, code, add) <= 0:
                    break
    finally:
        chase.finish(state.id, ok, code, depth, verified)
    if ok:
        # Where this engine can learn (issue 23): a path it completed itself.
        # pyOpenSSL's verify callback does not show the path of a chain that
        # was complete, so those teach nothing here.
        from ..chase import learned

        learned.learn_path(verified, options)
    return ok


ENGINE = PyOpenSSLEngine()
