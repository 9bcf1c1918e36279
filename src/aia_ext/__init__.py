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

Diagnosis lives in ``aia_ext.diagnosis``; the client integrations in
``aia_ext.requests``, ``aia_ext.aiohttp``, ``aia_ext.httpx`` and
``aia_ext.asyncio``; a local lab to test against in ``aia_ext.testing``.  Each
is an attribute of the package, imported on first use.  Logs go to the
``aia_ext`` logger (fetches at DEBUG).
"""

from __future__ import annotations

import importlib

# First, before any module of ours: under AIA_EXT_INJECT=1 the first import
# of ssl injects (_aia_ext_hook.py), which imports our modules; it must not
# find one of them half-imported.
import ssl  # noqa: F401
import sys

from ._private.api import (
    SSLContext,
    clear_cache,
    create_default_context,
    disable,
    enable,
    engine_of,
    is_enabled,
)
from ._private.errors import AIAError, FetchError, MissingDependencyError, UnsupportedPlatformError
from ._private.inject import extract_from_ssl, inject_into_ssl, is_injected
from ._private.logtext import get_logger
from ._private.options import Options
from ._version import __version__

TYPE_CHECKING = False  # typing's, without importing typing (~3 ms)
if TYPE_CHECKING:
    from typing import Any

if TYPE_CHECKING:
    from ._private.prefetch import aprefetch, prefetch
    from ._private.report import AddedCertificate, FailedAttempt, Report, report

# Reports and prefetching are loaded on first use (PEP 562): their records and
# helpers cost ~4 ms of import that a program enabling AIA never needs
# (docs/design.md, "Import time").
_ON_FIRST_USE = {
    "AddedCertificate": "report", "FailedAttempt": "report", "Report": "report",
    "report": "report", "aprefetch": "prefetch", "prefetch": "prefetch",
}


#: The public submodules, reachable as attributes after ``import aia_ext``
#: (issue 25) and imported on first use: each pulls in a client library or a
#: test PKI that a program enabling AIA never needs.
_SUBMODULES = frozenset({"aiohttp", "asyncio", "diagnosis", "httpx", "requests", "testing"})


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        # import_module also sets it as an attribute of this package.
        return importlib.import_module(f"{__name__}.{name}")
    module = _ON_FIRST_USE.get(name)
    if module is None:
        raise AttributeError(f"module 'aia_ext' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"aia_ext._private.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_ON_FIRST_USE) | _SUBMODULES)

# A library leaves output to the application: without a NullHandler on the
# package logger, a WARNING would reach every program's stderr through
# logging's last resort (as urllib3 does).  It is set when aia_ext first logs
# (_private/logtext.py), so that `import aia_ext` does not import logging; a
# program that already imported logging gets it now.
if "logging" in sys.modules:
    get_logger(__name__).logger  # noqa: B018 - made now, with its NullHandler

__all__ = [
    "AIAError",
    "AddedCertificate",
    "FailedAttempt",
    "FetchError",
    "MissingDependencyError",
    "Options",
    "Report",
    "SSLContext",
    "UnsupportedPlatformError",
    "__version__",
    "aprefetch",
    "clear_cache",
    "create_default_context",
    "disable",
    "enable",
    "engine_of",
    "extract_from_ssl",
    "inject_into_ssl",
    "is_enabled",
    "is_injected",
    "prefetch",
    "report",
]
