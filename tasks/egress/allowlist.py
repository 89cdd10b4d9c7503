"""`STEPSTREAM_HTTP_ALLOW`: its entries parsed and normalised, and the `Allowlist` of
host names and networks let through although not public."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

from .addresses import IPAddress, IPNetwork, embedded_ipv4

#: The variable that opens addresses the policy refuses by default.
ALLOW_VARIABLE = "STEPSTREAM_HTTP_ALLOW"

# -- the allowlist ----------------------------------------------------------------------

_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_HOST_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")


def parse_allow(raw: str | Iterable[str]) -> tuple[str, ...]:
    """`STEPSTREAM_HTTP_ALLOW` (comma-separated, or a list) as normalised entries.

    Host names are lowercased without a trailing dot; IPs and CIDRs are written the
    way `ipaddress` writes them. Anything else raises ValueError naming the entry.
    """
    items = raw.split(",") if isinstance(raw, str) else raw
    entries: list[str] = []
    for item in items:
        entry = item.strip()
        if entry:
            entries.append(_parse_entry(entry))
    return tuple(dict.fromkeys(entries))


def _parse_entry(entry: str) -> str:
    invalid = f"{ALLOW_VARIABLE}: {entry!r} is not a host name, an IP address or a CIDR"
    if "/" in entry:
        try:
            return str(ipaddress.ip_network(entry))
        except ValueError as exc:
            raise ValueError(f"{invalid} ({exc})") from None
    try:
        return str(ipaddress.ip_address(entry.strip("[]")))
    except ValueError:
        pass
    try:
        name = entry.rstrip(".").encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise ValueError(invalid) from None
    last = name.rsplit(".", 1)[-1]
    # A numeric last label (127.1, 2130706433, 0x7f.1) is an address spelling, which
    # would be matched as a name; write the address or CIDR instead.
    if not _HOST_NAME.fullmatch(name) or len(name) > 253 or re.fullmatch(r"0x[0-9a-f]*|\d+", last):
        raise ValueError(invalid)
    return name


@dataclass(frozen=True)
class Allowlist:
    """What is let through although not public: host names, and networks of addresses."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, raw: str | Iterable[str]) -> Allowlist:
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for entry in parse_allow(raw):
            try:
                networks.append(ipaddress.ip_network(entry))
            except ValueError:
                hosts.add(entry)
        return cls(frozenset(hosts), tuple(networks))

    def opens_host(self, host: str) -> bool:
        return host.rstrip(".").lower() in self.hosts

    def opens(self, ip: IPAddress) -> bool:
        embedded = embedded_ipv4(ip)
        candidates = (ip,) if embedded is None else (ip, embedded[1])
        return any(c in net for c in candidates for net in self.networks)
