"""The exception hierarchy: one ``AIAError`` base for everything aia_ext raises.

Verification failures are never wrapped: they stay ``ssl.SSLCertVerificationError``
with OpenSSL's own ``verify_code``.
"""

from __future__ import annotations


class AIAError(Exception):
    """Base class of every exception aia_ext raises."""


class UnsupportedPlatformError(AIAError, RuntimeError):
    """The native engine cannot drive this interpreter's ``ssl`` module.

    Raised, for example, when ``_ssl`` links OpenSSL statically with hidden
    symbols (python-build-standalone, the interpreters uv installs) or when the
    OpenSSL reachable from ``_ssl`` is not the one ``ssl`` reports.
    """


class MissingDependencyError(AIAError, ImportError):
    """A feature needs an optional package that is not installed.

    The native engine needs nothing beyond the standard library (and cffi on
    CPython); the fallback engine, ``diagnose()``, ``aia-ext check`` and the
    test lab need cryptography, which is optional on PyPy 3.10+ where no
    loadable wheel exists for every PyPy release (docs/engines.md).
    """


def missing_cryptography(feature: str, cause: ImportError) -> MissingDependencyError:
    """The error for ``feature`` asked for where cryptography cannot be imported."""
    return MissingDependencyError(
        f"{feature} needs the cryptography package, which is not installed or does not "
        f"load here ({cause}); install it with: pip install 'aia-ext[cryptography]'")


class FetchError(AIAError):
    """One caIssuers URL could not be turned into certificates.

    ``reason`` is a short, stable phrase for logs and reports ("timeout",
    "too large", "HTTP 404", ...).  These never leave the chasing code as
    exceptions: a failed fetch only means "no extra certificates".  A custom
    ``fetcher`` may raise it to report a failure with its own reason; any
    other exception from a fetcher is reported as "fetcher error".
    """

    #: Reasons starting with this depend on the asking context's options.
    POLICY_PREFIX = "refused by policy"

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail

    @property
    def is_policy(self) -> bool:
        """True when the URL was refused by this context's policy, not by the network."""
        return self.reason.startswith(self.POLICY_PREFIX)


class DiagnosisError(AIAError, ValueError):
    """``diagnose()`` cannot work on its target: unreadable, not a certificate, unreachable."""


class TargetUnreachable(DiagnosisError):
    """The target could not be connected to, or did not complete a TLS handshake."""
