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

import logging
import weakref
from typing import Any

from .options import make_options

__all__ = ["disable_pyopenssl", "enable_pyopenssl", "is_pyopenssl_context",
           "pyopenssl_enabled"]

log = logging.getLogger(__name__)

_MISSING_ISSUER = (2, 20)
# X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE: once the callback overrides the
# missing issuer, OpenSSL goes on with the leaf alone and cannot check its
# signature.  A consequence of the same missing issuer, accepted only after the
# completed chain verified (which checked that signature).
_CONSEQUENCES = (21,)
_MAX_ROUNDS = 32
_enabled: weakref.WeakSet[Any] = weakref.WeakSet()


def is_pyopenssl_context(obj: object) -> bool:
    cls = type(obj)
    return cls.__module__ == "OpenSSL.SSL" and cls.__name__ == "Context"


def enable_pyopenssl(context: Any, options: dict[str, Any]) -> Any:
    """Set the AIA verify callback on an ``OpenSSL.SSL.Context``, keeping its mode."""
    from OpenSSL import SSL

    opts = make_options(options)
    # Per-connection outcome of the chase, so it runs once per handshake.
    outcomes: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()

    def callback(conn: Any, cert: Any, errno: int, depth: int, ok: int) -> bool:
        if ok:
            return True
        if context.get_verify_mode() == SSL.VERIFY_NONE:
            return True  # nobody verifies: OpenSSL ignores the verdict, and we fetch nothing
        if errno in _CONSEQUENCES:
            return outcomes.get(conn, False)
        if errno not in _MISSING_ISSUER:
            return False  # any other verdict stands, as OpenSSL gave it
        if conn not in outcomes:
            try:
                outcomes[conn] = _complete(conn, context, opts)
            except Exception:
                log.exception("aia_ext: internal error while completing a pyOpenSSL chain")
                outcomes[conn] = False
        return outcomes[conn]

    context.set_verify(context.get_verify_mode(), callback)  # the caller's mode, unchanged
    _enabled.add(context)
    return context


def pyopenssl_enabled(context: Any) -> bool:
    return context in _enabled


def disable_pyopenssl(context: Any) -> Any:
    """Remove the AIA callback; OpenSSL's own verdicts apply alone again."""
    if context in _enabled:
        context.set_verify(context.get_verify_mode(), None)
        _enabled.discard(context)
    return context


def _complete(conn: Any, context: Any, options: Any) -> bool:
    """Fetch missing issuers and verify the completed chain with OpenSSL."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding
    from OpenSSL import crypto

    from . import chase

    served = conn.get_peer_cert_chain() or []  # pyOpenSSL X509 objects, leaf first
    if not served:
        return False
    leaf = served[0]
    untrusted = list(served[1:])
    ders = {c.to_cryptography().public_bytes(Encoding.DER) for c in served}

    def add(der: bytes) -> int:
        if der in ders:
            return 0
        try:
            untrusted.append(crypto.X509.from_cryptography(x509.load_der_x509_certificate(der)))
        except Exception:  # noqa: BLE001 - unusable certificate
            return -1
        ders.add(der)
        return 1

    session, _ = chase.session_for(0, options)
    ok, code, depth = False, 20, 0
    try:
        for _round in range(_MAX_ROUNDS):
            store_ctx = crypto.X509StoreContext(context.get_cert_store(), leaf, untrusted)
            try:
                store_ctx.verify_certificate()
                ok, code = True, 0
                break
            except crypto.X509StoreContextError as exc:
                code, depth = int(exc.errors[0]), int(exc.errors[1])
                if code not in _MISSING_ISSUER:
                    break  # the completed chain has a real verdict
                missing = exc.certificate.to_cryptography().public_bytes(Encoding.DER)
                if chase.missing(session, missing, depth, code, add) <= 0:
                    break
    finally:
        chase.done(session.id, ok, code, depth)
    return ok
