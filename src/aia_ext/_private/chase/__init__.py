"""The chase: finding a verification's missing issuers, and the tools it uses.

- ``core``: the ``Chase`` of one verification and the calls engines make;
- ``fetch``: the bounded HTTP client for caIssuers URLs;
- ``policy``: which URLs and destination addresses may be fetched;
- ``response``: a response body -> certificates, under the response limits;
- ``cache`` / ``diskcache``: the process-wide memory cache and the opt-in disk cache;
- ``finished``: recently finished chases, for ``report()``.

Nothing in this package imports an engine or the public API.  This file
imports nothing: ``import aia_ext`` must not pay for the fetch path
(h11 and our parsers) until a chain actually needs it.
"""
