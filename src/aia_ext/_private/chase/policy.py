"""Which caIssuers URLs may be fetched, and which addresses may be connected to.

The URL comes from a certificate nobody has verified yet, so it is attacker
input (docs/design.md, invariant 5).  RFC 5280 section 4.2.2.1 allows http, ldap and
(by extension) https; like Chromium we fetch plain http only, https on opt-in.
"""

from __future__ import annotations

import ipaddress
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


def address_refusal(address: str, allow_private: bool) -> str | None:
    """Why a resolved destination address must not be connected to, or None.

    Link-local (cloud metadata at 169.254.169.254, fe80::/10), multicast,
    unspecified and broadcast addresses are always refused.  Loopback and
    private ranges are allowed unless ``allow_private`` is False, because
    internal CAs publish their issuers there.
    """
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return f"refused by policy: unparsable address {address!r}"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_link_local:
        return f"refused by policy: link-local address {ip}"
    if ip.is_multicast:
        return f"refused by policy: multicast address {ip}"
    if ip.is_unspecified:
        return f"refused by policy: unspecified address {ip}"
    if ip == ipaddress.IPv4Address("255.255.255.255"):
        return f"refused by policy: broadcast address {ip}"
    if not allow_private and (ip.is_private or ip.is_loopback or ip.is_reserved):
        return f"refused by policy: private address {ip} (allow_private=False)"
    return None


def check_url(url: str, options: Options) -> None:
    """Raise FetchError if ``url`` is refused by the policy."""
    refusal = url_refusal(url, options)
    if refusal is not None:
        raise FetchError(refusal)
