"""The fallback engine: verification after the handshake, with cryptography's verifier.

For interpreters whose OpenSSL the native engine cannot reach
(python-build-standalone as uv installs it, static builds), or when
``AIA_EXT_ENGINE=fallback``.  Its parts:

- ``context``: ``VerifyingContext`` (the base of ``aia_ext.SSLContext``) and the
  sockets that verify before ``do_handshake()`` returns;
- ``verify``: the path walk, the chase, and cryptography's verdict mapped to
  OpenSSL's codes;
- ``trust_store``: the context's CA certificates, as OpenSSL would find them;
- ``peercert``: ``getpeercert()``'s dictionary without OpenSSL.
"""

from __future__ import annotations

import os
import ssl
from typing import TYPE_CHECKING, Any

from ... import binding
from ...errors import UnsupportedPlatformError, missing_cryptography
from ...options import Options
from ...stdlib_ssl import (
    openssl_check_hostname,
    openssl_verify_mode,
    trust_sources,
)
from ..base import ConnectionChase, EngineName, OfflineResult, importable

if TYPE_CHECKING:
    import datetime

from .context import (
    CHAIN_KEY,
    CHASE_KEY,
    STATE_KEY,
    FallbackState,
    VerifyingContext,
    set_openssl_level,
    state_of,
)


class FallbackEngine:
    """Verification after the handshake (docs/engines.md)."""

    name: EngineName = "fallback"
    needs_context_class = True

    def available(self) -> bool:
        return importable("cryptography.x509.verification")

    def enable(self, context: Any, options: Options) -> None:
        try:
            # A real import, not a probe: a wheel may be installed yet not load
            # (cryptography 47+ on PyPy 7.3.19), and the verifier must exist
            # before any connection relies on it.
            import cryptography.x509.verification  # noqa: F401
        except ImportError as exc:
            raise missing_cryptography(f"The fallback engine ({_why_not_native()})",
                                       exc) from exc
        # The verifier, on the enabling thread: handshakes in several threads would
        # otherwise import it at once, which CPython before 3.9.3 may take for a
        # circular import and refuse (bpo-43517; seen on Debian 11: issue 16).
        from . import verify  # noqa: F401
        state = state_of(context)
        if state is not None:
            state.options = options
            return
        if not isinstance(context, VerifyingContext):
            raise UnsupportedPlatformError(
                f"{_why_not_native()} So a plain ssl.SSLContext cannot be enabled in place "
                "here: use aia_ext.create_default_context(), aia_ext.SSLContext(...) or "
                "aia_ext.inject_into_ssl(), which verify after the handshake instead.")
        # OpenSSL must not verify (it would fail on the incomplete chain); the
        # caller-facing values live in the state and are enforced after the handshake.
        state = FallbackState(options, openssl_verify_mode(context),
                              openssl_check_hostname(context))
        set_openssl_level(context, ssl.CERT_NONE, False)
        context.__dict__[STATE_KEY] = state

    def disable(self, context: Any) -> bool:
        """Put OpenSSL's verification back as the caller set it."""
        state = state_of(context)
        if state is None:
            return False
        del context.__dict__[STATE_KEY]
        set_openssl_level(context, state.verify_mode, state.check_hostname)
        return True

    def is_enabled(self, context: Any) -> bool:
        return state_of(context) is not None

    def options_of(self, context: Any) -> Options | None:
        state = state_of(context)
        return state.options if state is not None else None

    def chase_of(self, conn: object) -> ConnectionChase | None:
        # A low-level socket (httpx's "ssl_object") leads to its wrapper by `owner`.
        wrapper = getattr(conn, "owner", None) or conn
        attributes = getattr(wrapper, "__dict__", {})
        chase_id = attributes.get(CHASE_KEY)
        if chase_id is None:
            return None
        return ConnectionChase(chase_id, attributes.get(CHAIN_KEY, ()))

    def verify_offline(self, context: Any, ders: list[bytes], hostname: str | None,
                       at: datetime.datetime | None) -> OfflineResult:
        from .verify import verify_chain  # cryptography: only when used

        state = state_of(context)
        if state is None:
            raise ValueError("the context is not enabled with the fallback engine")
        default_paths, capaths = trust_sources(context)
        try:
            chase_id, chain = verify_chain(ders, context, hostname, state.options,
                                           default_paths, capaths, at)
        except ssl.SSLCertVerificationError as exc:
            return OfflineResult(False, exc.verify_code, 0, (),
                                 getattr(exc, "aia_chase_id", 0))
        return OfflineResult(True, 0, 0, tuple(chain), chase_id)


def _why_not_native() -> str:
    if os.environ.get("AIA_EXT_ENGINE", "").strip().lower() == "fallback":
        return "AIA_EXT_ENGINE=fallback is set."
    error = binding.bind_error()
    return str(error) if error is not None else "The native engine is not in force."


ENGINE = FallbackEngine()
