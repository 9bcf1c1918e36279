"""aia_ext: complete incomplete TLS certificate chains in Python's ssl, as browsers do.

When a server omits its intermediate certificate, verification fails with
"unable to get local issuer certificate".  With aia_ext enabled on an
``ssl.SSLContext``, the missing issuer is fetched from the caIssuers URL of
the certificate's Authority Information Access extension, inside the
handshake, and added as an *untrusted* intermediate: OpenSSL's verification
then runs again, exactly as strict as before.

    import aia_ext
    ctx = aia_ext.create_default_context()
    # or, on a context you already have:
    aia_ext.enable(ctx)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._private.context import create_default_context, disable, enable, is_enabled
from ._private.errors import AIAError, FetchError, UnsupportedPlatformError
from ._private.inject import extract_from_ssl, inject_into_ssl, is_injected
from ._private.options import Options
from ._private.sslcontext import SSLContext
from ._version import __version__

if TYPE_CHECKING:
    from ._private.diagnose import CertificateInfo, Diagnosis, DiagnosisError, diagnose
    from ._private.prefetch import aprefetch, prefetch
    from ._private.report import FailedURL, FetchedCertificate, Report, report

# Reports and diagnosis are imported on first use (PEP 562): they pull in
# dataclasses, sockets and cryptography, which the handshake path never needs.
_LAZY = {
    "CertificateInfo": "diagnose", "Diagnosis": "diagnose", "DiagnosisError": "diagnose",
    "diagnose": "diagnose", "FailedURL": "report", "FetchedCertificate": "report",
    "Report": "report", "report": "report", "aprefetch": "prefetch", "prefetch": "prefetch",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'aia_ext' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"aia_ext._private.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

__all__ = [
    "AIAError",
    "CertificateInfo",
    "Diagnosis",
    "DiagnosisError",
    "FailedURL",
    "FetchError",
    "FetchedCertificate",
    "Options",
    "Report",
    "SSLContext",
    "UnsupportedPlatformError",
    "__version__",
    "aprefetch",
    "clear_cache",
    "create_default_context",
    "diagnose",
    "disable",
    "enable",
    "extract_from_ssl",
    "inject_into_ssl",
    "is_enabled",
    "is_injected",
    "prefetch",
    "report",
]


def clear_cache() -> None:
    """Forget every cached AIA response in this process."""
    from ._private.cache import cache  # not at import time: it is off the fast path

    cache.clear()
