"""requests integration (optional; needs ``requests`` installed).

    import requests
    from aia_ext.requests import AIAAdapter

    session = requests.Session()
    session.mount("https://", AIAAdapter())

The adapter hands an AIA-enabled ``ssl.SSLContext`` to urllib3: no CA bundle
file is written, and no temporary file is involved.
"""

from __future__ import annotations

import ssl
from typing import Any

from requests.adapters import HTTPAdapter

from ._private.api import create_default_context

__all__ = ["AIAAdapter"]


class AIAAdapter(HTTPAdapter):
    """An ``HTTPAdapter`` whose connections verify with an AIA-enabled context.

    ``ssl_context`` defaults to ``aia_ext.create_default_context()``.  With
    ``verify=True`` (requests' default) the context's own trust store is used
    as is; requests would otherwise load certifi's bundle into it.  An explicit
    ``verify="path"`` is honoured as requests always does.
    """

    def __init__(self, ssl_context: ssl.SSLContext | None = None, **kwargs: Any) -> None:
        self.ssl_context = ssl_context or create_default_context()
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["ssl_context"] = self.ssl_context
        super().init_poolmanager(*args, **kwargs)

    def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
        kwargs["ssl_context"] = self.ssl_context
        return super().proxy_manager_for(proxy, **kwargs)

    def build_connection_pool_key_attributes(self, request: Any, verify: Any,
                                             cert: Any = None) -> Any:
        # requests >= 2.32 hands ca_certs to urllib3 here, not in cert_verify.
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(
            request, verify, cert)
        if verify is True:
            pool_kwargs.pop("ca_certs", None)
            pool_kwargs.pop("ca_cert_dir", None)
        return host_params, pool_kwargs

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        super().cert_verify(conn, url, verify, cert)
        if verify is True and url.lower().startswith("https"):
            # Keep the context's trust store: requests would point urllib3 at
            # certifi, and urllib3 would load it into our context.
            conn.ca_certs = None
            conn.ca_cert_dir = None
