"""The fallback engine: client connections verified by OpenSSL in cryptography, in Python.

For interpreters whose OpenSSL the native engine cannot reach
(python-build-standalone as uv installs it, static builds), or when
``AIA_EXT_ENGINE=fallback``.  Its parts:

- ``context``: ``VerifyingContext`` (the base of ``aia_ext.SSLContext``),
  where each client connection is created with OpenSSL's verification set
  aside and a verifier attached, and the message callback that routes a
  server's certificates to it;
- ``connection``: the verifier each such connection owns, and the socket
  classes that ask it at every entry point;
- ``state``: what a context supplies (options, security level);
- ``tls_records``: Certificate messages and alerts; ``sessions``: which
  sessions may be resumed;
- ``verify``: the chase loop around OpenSSL's verifier, and the security level;
- ``openssl``: ``X509_verify_cert`` through cryptography's OpenSSL binding;
- ``trust_store``: the context's trust material, as OpenSSL would find it;
- ``rules``: key and digest strength at the context's security level;
- ``failures``: exceptions worded and numbered as this interpreter's ssl does;
- ``verdicts``: the cache of successful verdicts.
"""

from __future__ import annotations

import os
import ssl

from ... import binding
from ...errors import UnsupportedPlatformError, missing_cryptography
from ...options import Options
from ..base import ConnectionChase, OfflineResult, importable
from . import state as states
from .connection import verifier_of
from .context import VerifyingContext, install_tap, remove_tap, window_lock

TYPE_CHECKING = False  # typing's, without importing typing (~3 ms)
if TYPE_CHECKING:
    from typing import Any

    from ..base import EngineName

if TYPE_CHECKING:
    import datetime


class FallbackEngine:
    """Client connections verified in Python with cryptography's OpenSSL (docs/engines.md)."""

    name: EngineName = "fallback"
    needs_context_class = True

    def available(self) -> bool:
        return importable("cryptography.hazmat.bindings.openssl.binding")

    def enable(self, context: Any, options: Options) -> None:
        try:
            # A real import, not a probe: a wheel may be installed yet not load
            # (cryptography 47+ on PyPy 7.3.19), its binding may lack a function
            # (openssl.REQUIRED), and the verifier must exist before any
            # connection relies on it.  On the enabling thread: handshakes in
            # several threads would otherwise import it at once, which CPython
            # before 3.9.3 may take for a circular import and refuse
            # (bpo-43517; seen on Debian 11: issue 16).
            from . import verify  # noqa: F401
            from .failures import learn_suffix_soon
        except ImportError as exc:
            raise missing_cryptography(f"The fallback engine ({_why_not_native()})",
                                       exc) from exc
        learn_suffix_soon()
        if not isinstance(context, VerifyingContext):
            raise UnsupportedPlatformError(
                f"{_why_not_native()} This {type(context).__module__}."
                f"{type(context).__name__} cannot be enabled in place here: use "
                "aia_ext.create_default_context(), aia_ext.SSLContext(...) or "
                "aia_ext.inject_into_ssl(), whose connections it can verify instead.")
        with window_lock(context):
            state = states.state_of(context)
            if state is not None:
                state.options = options
                return
            # The context's OpenSSL settings stay as they are: only client
            # connections made from now on set OpenSSL's verification aside,
            # each with its own verifier (context.py, connection.py).
            states.attach(context, options)
            install_tap(context)

    def disable(self, context: Any) -> bool:
        # Connections made before keep their verifiers: whether they are
        # verified never depends on this state (docs/design.md, invariant 6).
        with window_lock(context):
            if states.state_of(context) is None:
                return False
            states.detach(context)
            remove_tap(context)
        return True

    def is_enabled(self, context: Any) -> bool:
        return states.state_of(context) is not None

    def options_of(self, context: Any) -> Options | None:
        state = states.state_of(context)
        return state.options if state is not None else None

    def chase_of(self, conn: object) -> ConnectionChase | None:
        # A low-level socket (httpx's "ssl_object") leads to its wrapper by `owner`.
        verifier = verifier_of(getattr(conn, "owner", None) or conn)
        if verifier is None or not verifier.verified:
            return None
        return ConnectionChase(verifier.chase_id, verifier.chain)

    def verify_offline(self, context: Any, ders: list[bytes], hostname: str | None,
                       at: datetime.datetime | None) -> OfflineResult:
        from .verify import request_for, verify_chain  # cryptography: only when used

        options = self.options_of(context)
        if options is None:
            raise ValueError("the context is not enabled with the fallback engine")
        try:
            chase_id, chain = verify_chain(ders, context, request_for(context, hostname, at),
                                           options)
        except ssl.SSLCertVerificationError as exc:
            return OfflineResult(False, exc.verify_code, getattr(exc, "aia_depth", 0), (),
                                 getattr(exc, "aia_chase_id", 0))
        return OfflineResult(True, 0, 0, tuple(chain), chase_id)


def _why_not_native() -> str:
    if os.environ.get("AIA_EXT_ENGINE", "").strip().lower() == "fallback":
        return "AIA_EXT_ENGINE=fallback is set."
    error = binding.bind_error()
    return str(error) if error is not None else "The native engine is not in force."


ENGINE = FallbackEngine()
