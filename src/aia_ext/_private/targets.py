"""One reader for the ``https://host[:port]`` / ``host[:port]`` targets users type.

Shared by ``prefetch()``, ``diagnose()`` and ``aia-ext check``, so that all
three accept the same spellings (IPv6 in brackets, a default port of 443).
"""

from __future__ import annotations

#: host, or [IPv6], then an optional :port.  Compiled on first use: ``re``
#: costs ~2 ms of ``import aia_ext`` (the native engine reads is_ip_literal).
_HOST_PORT = r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::(\d{1,5}))?$"


def is_ip_literal(host: str) -> bool:
    """Whether ``host`` is an IPv4 or IPv6 address (checked as an IP, not a DNS name)."""
    import ipaddress  # ~1 ms of import: only when a target is checked

    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def looks_like_url(text: str) -> bool:
    return "://" in text


def _a_label(host: str, text: str) -> str:
    """``host`` in ASCII: an internationalised name as its IDNA A-labels, as ``ssl`` and
    ``socket`` encode it, so that both spellings of a target reach the same server."""
    if host.isascii():
        return host
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        raise ValueError(f"{text!r} holds a host name IDNA cannot encode") from None


def parse_host_port(text: str, schemes: tuple[str, ...] = ("https",),
                    default_port: int = 443) -> tuple[str, int]:
    """(host, port) of a URL with one of ``schemes``, or of ``host[:port]``.

    A Unicode host name is accepted in both forms and returned as its IDNA
    A-labels (issue 26, item 13: only the URL form took one).

    :raises ValueError: anything else, with the text quoted.
    """
    if looks_like_url(text):
        from urllib.parse import urlsplit  # ~1 ms of import: only for URL targets

        parts = urlsplit(text)
        if parts.scheme.lower() not in schemes:
            raise ValueError(f"{text!r} is not an {'/'.join(schemes)} URL or host[:port]")
        try:
            port = parts.port or default_port
        except ValueError:
            raise ValueError(f"bad port in {text!r}") from None
        if not parts.hostname:
            raise ValueError(f"no host in {text!r}")
        return _a_label(parts.hostname, text), port
    ascii_text = text
    host, colon, rest = text.rpartition(":") if not text.startswith("[") else ("", "", "")
    if colon and not host.isascii():
        ascii_text = f"{_a_label(host, text)}:{rest}"
    elif not text.isascii():
        ascii_text = _a_label(text, text)
    import re

    match = re.match(_HOST_PORT, ascii_text)
    if match is None:
        raise ValueError(f"{text!r} is not an https:// URL, host[:port] or certificate file")
    port = int(match.group(2) or default_port)
    if not 0 < port < 65536:
        raise ValueError(f"bad port in {text!r}")
    return match.group(1).strip("[]"), port
