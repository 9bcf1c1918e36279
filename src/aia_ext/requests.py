"""requests integration (optional; needs ``requests`` installed).

    import requests
    from aia_ext.requests import AIAAdapter

    session = requests.Session()
    session.mount("https://", AIAAdapter())

The adapter hands urllib3 AIA-enabled ``ssl.SSLContext`` objects: no CA bundle
file is written, and no temporary file is involved.
"""

from __future__ import annotations

import os
import ssl
import threading
from collections import OrderedDict
from typing import Any

from requests.adapters import HTTPAdapter

from ._private.api import create_default_context, derive_context

__all__ = ["AIAAdapter"]

#: Contexts derived for per-request ``verify``/``cert`` combinations, at most.
MAX_DERIVED_CONTEXTS = 32
_FILE_ATTRIBUTES = ("ca_certs", "ca_cert_dir", "cert_file", "key_file")


def _environment_bundles() -> set[str]:
    return {path for path in (os.environ.get("REQUESTS_CA_BUNDLE"),
                              os.environ.get("CURL_CA_BUNDLE")) if path}


_defaults_lock = threading.Lock()
_defaults: dict[str, ssl.SSLContext] = {}


def _shared_default() -> ssl.SSLContext:
    """aia_ext.create_default_context(), made once per engine (AIA_EXT_ENGINE may change
    between adapters; tests change it) and shared by the adapters given no context."""
    engine = os.environ.get("AIA_EXT_ENGINE", "")  # what engines.select() reads
    context = _defaults.get(engine)
    if context is None:
        with _defaults_lock:
            context = _defaults.get(engine)
            if context is None:
                context = _defaults[engine] = create_default_context()
    return context


class AIAAdapter(HTTPAdapter):
    """An ``HTTPAdapter`` whose connections verify with AIA-enabled contexts.

    ``ssl_context`` (default ``aia_ext.create_default_context()``) serves
    requests made with ``verify=True`` and no client certificate, its trust
    store used as is.  Every other ``(verify, cert)`` combination gets a context
    of its own, derived from it (same options, flags and protocol versions):
    ``verify="path"`` trusts that bundle or directory only, ``cert=`` presents
    that client certificate, and ``verify=False`` does not verify (nor fetch), as
    with requests' own ``HTTPAdapter``.  urllib3 loads per-request files into
    the context it is given; here it is never given any, so nothing a request
    asks for reaches another host or a later request (psf/requests#6726,
    urllib3/urllib3#3036).  The given context is never modified.

    Without ``ssl_context``, adapters share one default context per process
    and engine, made by the first: loading the system trust store costs tens
    of milliseconds, and code that makes a Session per request would pay it
    on every request (issue 31, item 6).  It is never modified; to change
    what an adapter trusts, pass a context of your own.

    ``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE``: requests passes their path as
    ``verify``; that bundle is *added* to ``ssl_context``'s trust store, which
    it never replaces.  Precedence: ``verify=False`` (no verification), an
    explicit ``verify="path"`` (that bundle only), then ``ssl_context`` plus the
    environment's bundle, if set.
    """

    def __init__(self, ssl_context: ssl.SSLContext | None = None, **kwargs: Any) -> None:
        self.ssl_context = ssl_context or _shared_default()
        self._derived: OrderedDict[tuple[Any, Any, Any], ssl.SSLContext] = OrderedDict()
        self._derived_lock = threading.Lock()
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["ssl_context"] = self.ssl_context
        super().init_poolmanager(*args, **kwargs)

    def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
        kwargs["ssl_context"] = self.ssl_context
        return super().proxy_manager_for(proxy, **kwargs)

    def build_connection_pool_key_attributes(self, request: Any, verify: Any,
                                             cert: Any = None) -> Any:
        # requests >= 2.32 chooses the pool here: the context is part of its key.
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(
            request, verify, cert)
        if host_params.get("scheme") == "https":
            pool_kwargs["ssl_context"] = self.context_for(verify, cert)
            for name in _FILE_ATTRIBUTES:
                pool_kwargs.pop(name, None)
        return host_params, pool_kwargs

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        # requests' checks (the files exist) still apply; then the pool's own
        # context carries them, so urllib3 must not load them into it again.
        super().cert_verify(conn, url, verify, cert)
        if url.lower().startswith("https"):
            for name in _FILE_ATTRIBUTES:
                setattr(conn, name, None)

    def context_for(self, verify: Any, cert: Any) -> ssl.SSLContext:
        """The context for requests made with this ``verify`` and ``cert``."""
        if isinstance(cert, list):
            cert = tuple(cert)
        if verify is not False and not isinstance(verify, str):
            verify = True
        # requests turns verify=True into the path in REQUESTS_CA_BUNDLE or
        # CURL_CA_BUNDLE (Session.merge_environment_settings), set on many
        # Debian, conda and CI images.  That bundle adds to the adapter's own
        # context, as requests does with a custom context; it never replaces
        # it (issue 25).  Only a verify= path that is not the environment's
        # replaces the trust store.
        added = None
        if isinstance(verify, str) and verify in _environment_bundles():
            verify, added = True, verify
        if verify is True and not cert and added is None:
            return self.ssl_context
        key = (verify, cert, added)
        with self._derived_lock:
            context = self._derived.get(key)
            if context is not None:
                self._derived.move_to_end(key)
                return context
        context = derive_context(self.ssl_context, verify=verify is not False,
                                 trust=verify if isinstance(verify, str) else None,
                                 also_trust=added)
        if cert:
            certfile, keyfile = (cert if isinstance(cert, tuple) else (cert, None))
            context.load_cert_chain(certfile, keyfile)
        with self._derived_lock:
            self._derived[key] = context
            while len(self._derived) > MAX_DERIVED_CONTEXTS:
                self._derived.popitem(last=False)
        return context
