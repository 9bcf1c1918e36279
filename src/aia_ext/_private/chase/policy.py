"""Which caIssuers URLs may be fetched (destination addresses: addresses.py).

The URL comes from a certificate nobody has verified yet, so it is attacker
input (docs/design.md, invariant 5).  RFC 5280 section 4.2.2.1 allows http, ldap and
(by extension) https; like Chromium we fetch plain http only, https on opt-in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from ..errors import FetchError

if TYPE_CHECKING:
    from ..options import Options

#: Longer URLs are refused; real caIssuers URLs are well under 200 characters.
MAX_URL_LENGTH = 2048


def url_refusal(url: str, options: Options) -> str | None:
    """Why ``url`` must not be fetched under ``options``, or None if it may be."""
    if len(url) > MAX_URL_LENGTH:
        return "refused by policy: URL too long"
    # Printable ASCII without spaces: no control characters (header
    # injection), no whitespace, no IRIs.  isprintable() rejects DEL too.
    if not (url.isascii() and url.isprintable()) or " " in url:
        return "refused by policy: malformed URL"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "refused by policy: malformed URL"
    scheme = parts.scheme.lower()
    if scheme == "https":
        if not options.allow_https:
            return "refused by policy: https not enabled (allow_https=False)"
    elif scheme != "http":
        return f"refused by policy: scheme {scheme or '(none)'!r} is not fetched"
    if not parts.hostname:
        return "refused by policy: malformed URL (no host)"
    if "%" in parts.hostname:
        # An IPv6 zone identifier (RFC 6874, "%25eth0") scopes a link-local
        # address, which is never fetched, and resolvers and proxies read it
        # differently.
        return "refused by policy: zone identifier in the host"
    if parts.username is not None or parts.password is not None:
        return "refused by policy: credentials in URL"
    if port == 0:
        return "refused by policy: port 0"
    if options.url_filter is not None:
        try:
            allowed = options.url_filter(url)
        except Exception as exc:  # noqa: BLE001 - a broken filter refuses (fail closed)
            return f"refused by policy: url_filter raised {type(exc).__name__}"
        if not allowed:
            return "refused by policy: url_filter"
    return None


def check_url(url: str, options: Options) -> None:
    """Raise FetchError if ``url`` is refused by the policy."""
    refusal = url_refusal(url, options)
    if refusal is not None:
        raise FetchError(refusal)
