"""Which IP addresses are public: the classes of non-public addresses, and the IPv4
address an IPv6 form carries (judged, and opened by an allowlist, by that address)."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# -- address classes --------------------------------------------------------------------

_net = ipaddress.ip_network
_CGNAT = _net("100.64.0.0/10")
_RFC1918 = (_net("10.0.0.0/8"), _net("172.16.0.0/12"), _net("192.168.0.0/16"))
_UNIQUE_LOCAL = _net("fc00::/7")
_NAT64 = _net("64:ff9b::/96")
_NAT64_LOCAL = _net("64:ff9b:1::/48")
_SIXTOFOUR = _net("2002::/16")
_COMPATIBLE = _net("::/96")
_METADATA = ipaddress.IPv4Address("169.254.169.254")
_BROADCAST = ipaddress.IPv4Address("255.255.255.255")
#: IANA's special-purpose blocks that are not globally reachable, kept here rather than
#: trusted to the running Python: `ipaddress`'s own table changed between patch
#: releases (3.11.7 lacks most of 192.0.0.0/24, for one).
_SPECIAL = tuple(
    _net(block)
    for block in (
        "0.0.0.0/8",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "240.0.0.0/4",
        "100::/64",
        "2001::/23",
        "2001:db8::/32",
        "3fff::/20",
        "5f00::/16",
    )
)
#: Within those blocks, the addresses and blocks IANA marks globally reachable.
_SPECIAL_GLOBAL = tuple(
    _net(block)
    for block in (
        "192.0.0.9/32",
        "192.0.0.10/32",
        "2001:1::1/128",
        "2001:1::2/128",
        "2001:3::/32",
        "2001:4:112::/48",
        "2001:20::/28",
        "2001:30::/28",
    )
)


def _special(ip: IPAddress) -> bool:
    return any(ip in net for net in _SPECIAL) and not any(ip in net for net in _SPECIAL_GLOBAL)


# In order: the first that matches names the class in the refusal.
_CLASSES: tuple[tuple[Callable[[Any], bool], str], ...] = (
    (lambda ip: ip.is_unspecified, "an unspecified address"),
    (lambda ip: ip.is_loopback, "a loopback address"),
    (lambda ip: ip == _METADATA, "a link-local address (cloud metadata)"),
    (lambda ip: ip.is_link_local, "a link-local address"),
    (lambda ip: ip.is_multicast, "a multicast address"),
    (lambda ip: ip == _BROADCAST, "a broadcast address"),
    (lambda ip: ip in _CGNAT, "a shared (CGNAT) address"),
    (lambda ip: any(ip in net for net in _RFC1918), "a private address"),
    (lambda ip: ip in _UNIQUE_LOCAL, "a unique local address"),
    (lambda ip: ip.version == 6 and ip.is_site_local, "a site-local address"),
    (lambda ip: ip in _NAT64_LOCAL, "a local-use NAT64 address"),
    (lambda ip: ip.is_reserved, "a reserved address"),
    (_special, "a special-purpose address"),
    (lambda ip: ip.is_private or not ip.is_global, "a special-purpose address"),
)


def non_public(ip: IPAddress) -> str | None:
    """Why `ip` is not a public address ("a loopback address", ...); None if it is."""
    embedded = embedded_ipv4(ip)
    if embedded is not None:
        form, inner = embedded
        why = non_public(inner)
        if why is not None:
            return f"{form} form of {inner}, {why}"
        # ::a.b.c.d is deprecated and nothing should route it; the others reach `inner`.
        return "a reserved address" if form == "an IPv4-compatible" else None
    for matches, label in _CLASSES:
        if matches(ip):
            return label
    return None


def embedded_ipv4(ip: IPAddress) -> tuple[str, ipaddress.IPv4Address] | None:
    """The IPv4 address an IPv6 form carries, with the form's name; None if none."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return "an IPv4-mapped", ip.ipv4_mapped
    if ip in _NAT64:
        return "a NAT64", ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in _SIXTOFOUR and ip.sixtofour is not None:
        return "a 6to4", ip.sixtofour
    if ip in _COMPATIBLE and int(ip) > 1:  # :: and ::1 are themselves
        return "an IPv4-compatible", ipaddress.IPv4Address(int(ip))
    return None
