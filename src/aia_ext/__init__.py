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

from ._private.context import create_default_context, disable, enable, is_enabled
from ._private.errors import AIAError, FetchError, UnsupportedPlatformError
from ._private.options import Options
from ._version import __version__

__all__ = [
    "AIAError",
    "FetchError",
    "Options",
    "UnsupportedPlatformError",
    "__version__",
    "clear_cache",
    "create_default_context",
    "disable",
    "enable",
    "is_enabled",
]


def clear_cache() -> None:
    """Forget every cached AIA response in this process."""
    from ._private.cache import cache  # not at import time: it is off the fast path

    cache.clear()
