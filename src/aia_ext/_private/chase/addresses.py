"""Which destination addresses a caIssuers fetch may connect to: a table, not special cases.

Two kinds of refusal (docs/security.md, "Destinations"):

- **always**: addresses no certificate has a reason to name, whatever the
  options.  Cloud metadata endpoints (``METADATA``), and the ranges of the IANA
  special-purpose registries that cannot be a server's unicast address
  (this-network, link-local, multicast, limited broadcast, reserved,
  discard-only, unspecified);
- **private**: the registries' ranges that are not globally reachable
  (loopback, RFC 1918, CGNAT, documentation, benchmarking, unique-local...),
  refused only with ``allow_private=False``, because internal CAs publish
  their issuers there.

Addresses that embed an IPv4 address (IPv4-mapped and -compatible IPv6, the
NAT64 well-known prefix, 6to4) are judged by the embedded address too, so
``::ffff:169.254.169.254`` and ``64:ff9b::a9fe:a9fe`` are metadata.

Sources: IANA IPv4 and IPv6 Special-Purpose Address Registries (RFC 6890 and
updates), RFC 5737, 6598, 6666, 7526, 9637; the clouds' metadata documentation.
"""

from __future__ import annotations

import ipaddress
from typing import NamedTuple, Union

Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


class Range(NamedTuple):
    network: Network
    name: str
    always: bool  # refused whatever allow_private says


def _r(prefix: str, name: str, always: bool = False) -> Range:
    return Range(ipaddress.ip_network(prefix), name, always)


#: Cloud instance metadata and host endpoints: refused always, in every form.
METADATA: dict[Address, str] = {
    ipaddress.ip_address(a): n for a, n in (
        ("169.254.169.254", "the cloud metadata endpoint of AWS, GCP, Azure, Oracle, OpenStack"),
        ("169.254.170.2", "the AWS ECS task-credentials endpoint"),
        ("169.254.169.123", "the AWS time service"),
        ("169.254.0.23", "the Tencent Cloud metadata endpoint"),
        ("100.100.100.200", "the Alibaba Cloud metadata endpoint"),
        ("168.63.129.16", "the Azure WireServer host endpoint"),
        ("192.0.0.192", "the Oracle Cloud Classic metadata endpoint"),
        ("fd00:ec2::254", "the AWS IPv6 metadata endpoint"),
        ("fd00:ec2::123", "the AWS IPv6 time service"),
        ("fd20:ce::254", "the GCP IPv6 metadata endpoint"),
        ("fd00:c1::a9fe:a9fe", "the Oracle IPv6 metadata endpoint"),
    )
}
#: Host names that resolve to metadata endpoints inside clouds.  Checked by name
#: only where the name is not resolved here (through a proxy).
METADATA_NAMES = frozenset({
    "metadata", "metadata.google.internal", "metadata.goog", "instance-data",
    "instance-data.ec2.internal", "metadata.tencentyun.com", "100-100-100-200.aliyun.com",
})

#: The IANA special-purpose ranges, most specific first where they nest.
SPECIAL: tuple[Range, ...] = (
    # IPv4
    _r("0.0.0.0/32", "unspecified", always=True),  # reaches the local host on Linux
    _r("0.0.0.0/8", "this network", always=True),
    _r("10.0.0.0/8", "private-use"),
    _r("100.64.0.0/10", "shared address space (carrier-grade NAT)"),
    _r("127.0.0.0/8", "loopback"),
    _r("169.254.0.0/16", "link-local", always=True),
    _r("172.16.0.0/12", "private-use"),
    _r("192.0.0.0/24", "IETF protocol assignments"),
    _r("192.0.2.0/24", "documentation (TEST-NET-1)"),
    _r("192.88.99.0/24", "deprecated 6to4 relay anycast"),
    _r("192.168.0.0/16", "private-use"),
    _r("198.18.0.0/15", "benchmarking"),
    _r("198.51.100.0/24", "documentation (TEST-NET-2)"),
    _r("203.0.113.0/24", "documentation (TEST-NET-3)"),
    _r("224.0.0.0/4", "multicast", always=True),
    _r("255.255.255.255/32", "limited broadcast", always=True),
    _r("240.0.0.0/4", "reserved", always=True),
    # IPv6
    _r("::/128", "unspecified", always=True),
    _r("::1/128", "loopback"),
    _r("64:ff9b:1::/48", "local-use IPv4/IPv6 translation"),
    _r("100::/64", "discard-only", always=True),
    _r("100:0:0:1::/64", "dummy prefix"),
    _r("2001:2::/48", "benchmarking"),
    _r("2001:db8::/32", "documentation"),
    _r("2001::/23", "IETF protocol assignments"),
    _r("3fff::/20", "documentation"),
    _r("5f00::/16", "segment routing SIDs"),
    _r("fc00::/7", "unique-local"),
    _r("fe80::/10", "link-local", always=True),
    _r("fec0::/10", "deprecated site-local"),
    _r("ff00::/8", "multicast", always=True),
)

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_COMPATIBLE = ipaddress.ip_network("::/96")


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, compatible, NAT64, 6to4)."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64 or (ip in _COMPATIBLE and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _ipv4_number(part: str) -> int | None:
    # WHATWG URL "IPv4 number parser": 0x/0X hex (possibly empty), a leading
    # 0 octal, else decimal.
    if part[:2].lower() == "0x":
        digits, base = part[2:], 16
    elif len(part) > 1 and part[0] == "0":
        digits, base = part[1:], 8
    else:
        digits, base = part, 10
    if not digits:
        return 0 if base != 10 else None
    try:
        return int(digits, base) if digits.isalnum() and digits.isascii() else None
    except ValueError:
        return None


def literal_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """The IPv4 address a URL host denotes as the WHATWG URL standard reads it, or None.

    Proxies and resolvers disagree on spellings; the widest reading is the
    one a check must cover: one trailing dot is ignored, and one to four
    parts in decimal, octal (leading 0) or hex (0x) make an address, the last
    part filling the remaining bytes (``169.254.169.254.``, ``2852039166``,
    ``0xa9.0376.43518``).  A host whose last part is not a number is a name.
    """
    parts = host[:-1].split(".") if host.endswith(".") else host.split(".")
    if not parts or not parts[-1] or _ipv4_number(parts[-1]) is None or len(parts) > 4:
        return None
    numbers = [_ipv4_number(p) if p else None for p in parts]
    if any(n is None for n in numbers):
        return None
    values = [n for n in numbers if n is not None]
    if any(v > 255 for v in values[:-1]) or values[-1] >= 256 ** (5 - len(values)):
        return None
    value = values[-1]
    for index, number in enumerate(values[:-1]):
        value += number * 256 ** (3 - index)
    return ipaddress.IPv4Address(value)


def canonical_host(host: str) -> str:
    """``host`` as the address it denotes (an IPv4 literal in any spelling), else the
    name without one trailing dot, lower-cased: what the policy checks judge."""
    ipv4 = literal_ipv4(host)
    if ipv4 is not None:
        return str(ipv4)
    return host[:-1].lower() if host.endswith(".") else host.lower()


def parse(text: str) -> Address | None:
    """An address in canonical notation (a zone id after % is dropped), or None."""
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None


def refusal(address: str, allow_private: bool) -> str | None:
    """Why ``address`` (as the resolver returned it) must not be connected to, or None."""
    ip = parse(address)
    if ip is None:
        return f"refused by policy: unparsable address {address!r}"
    candidates: list[Address] = [ip]
    if isinstance(ip, ipaddress.IPv6Address):
        inner = embedded_ipv4(ip)
        if inner is not None:
            candidates.append(inner)
    via = f" (in {ip})" if len(candidates) > 1 else ""
    metadata = next((METADATA[c] for c in candidates if c in METADATA), None)
    ranges = [(c, r) for c in candidates for r in _ranges_of(c)]
    for candidate, entry in ranges:
        if entry.always:
            what = f", {metadata}" if metadata else ""
            return f"refused by policy: {entry.name} address {candidate}{via}{what}"
    if metadata:
        return f"refused by policy: {ip} is {metadata}"
    if not allow_private and ranges:
        candidate, entry = ranges[0]
        return (f"refused by policy: private address {candidate}{via} (allow_private=False): "
                f"{entry.name}")
    return None


def _ranges_of(ip: Address) -> list[Range]:
    return [r for r in SPECIAL if ip.version == r.network.version and ip in r.network][:1]
