"""Where tools may connect: the egress policy of `http_request`, open to any tool.

A step's URL often comes from a run's input, so a tool that fetches it must not become
a way into the worker's network. The policy resolves the host, refuses the connection
unless every address it resolves to is public (or opened by `STEPSTREAM_HTTP_ALLOW`),
and connects to the very address it checked, so a DNS answer that changes between the
check and the connection (DNS rebinding) cannot reach anything else.

- Non-public is decided with `ipaddress`: loopback, private (RFC 1918), shared (CGNAT
  100.64/10), link-local (169.254/16 with the cloud metadata address, fe80::/10),
  multicast, unspecified, reserved and broadcast, unique local (fc00::/7), site-local,
  and anything else not globally reachable. IPv6 forms that carry an IPv4 address
  (mapped, compatible, NAT64 64:ff9b::/96, 6to4) are judged by that address.
- Host spellings (`2130706433`, `127.1`, `0x7f.1`, `0177.0.0.1`) are normalised by the
  resolver (`socket.getaddrinfo`), never parsed here.
- `STEPSTREAM_HTTP_ALLOW` lists host names (matched against the URL's host), IPs and
  CIDRs (matched against resolved addresses) that are let through although not public.

Tool authors use it like this::

    from tasks import egress

    with egress.client(timeout=10) as http:   # every connection checked and pinned
        response = http.get(url)              # raises egress.EgressRefused if refused

`EgressRefused` is a `ToolFailure`, so letting it propagate fails the step with its
message. The client ignores proxy variables and does not follow redirects unless asked
(each redirect's connection is then checked like the first). `check_url` checks a URL
without connecting, for code that must use another client; that client would resolve
the name again, so prefer `client()` wherever it will do.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import ssl
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import httpcore
import httpx

from .errors import ToolFailure

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
#: `(host, port)` to the addresses it resolves to, as strings.
Resolver = Callable[[str, int], Iterable[str]]

#: The variable that opens addresses the policy refuses by default.
ALLOW_VARIABLE = "STEPSTREAM_HTTP_ALLOW"

#: Redirects a client follows at most (and `http_request` follows itself).
MAX_REDIRECTS = 10


class EgressRefused(ToolFailure):
    """A connection the policy does not allow; fails the step when left uncaught."""

    def __init__(self, target: str, reason: str) -> None:
        super().__init__(f"refused {target}: {reason}; {ALLOW_VARIABLE} opens it")
        #: What was refused (a URL, or `host:port`).
        self.target = target
        #: Why, e.g. "127.0.0.1 is a loopback address".
        self.reason = reason


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
    embedded = _embedded_ipv4(ip)
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


def _embedded_ipv4(ip: IPAddress) -> tuple[str, ipaddress.IPv4Address] | None:
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
        embedded = _embedded_ipv4(ip)
        candidates = (ip,) if embedded is None else (ip, embedded[1])
        return any(c in net for c in candidates for net in self.networks)


# -- the policy -------------------------------------------------------------------------


def system_resolver(host: str, port: int) -> list[str]:
    """The addresses `socket.getaddrinfo` gives for a TCP connection to `host:port`."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _numeric(host: str) -> bool:
    """Whether `host` is an address in some spelling (`127.1`, `0x7f.1`, `::1`), which
    resolves without asking DNS: showing its address reveals nothing."""
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    try:
        socket.inet_aton(host)
        return True
    except OSError:
        return False


@dataclass(frozen=True)
class EgressPolicy:
    """Which addresses connections may go to, and clients that keep to it."""

    allow: Allowlist = field(default_factory=Allowlist)
    resolver: Resolver = system_resolver

    def addresses(self, host: str, port: int) -> tuple[IPAddress, ...]:
        """Resolve `host` once and return its addresses if every one is allowed.

        Raises `EgressRefused` naming the first address refused, and `OSError`
        (`socket.gaierror`) when the name does not resolve.
        """
        target = f"{host}:{port}"
        found = tuple(ipaddress.ip_address(a) for a in self.resolver(host, port))
        if not found:
            raise EgressRefused(target, f"{host} resolves to no address")
        if self.allow.opens_host(host):
            return found
        for ip in found:
            why = None if self.allow.opens(ip) else non_public(ip)
            if why is not None:
                # A name's address is not shown: the refusal lands in the run, and
                # whoever may start runs must not map the internal network with it.
                if str(ip) == host:
                    raise EgressRefused(target, f"{ip} is {why}")
                if _numeric(host):
                    raise EgressRefused(target, f"{host} resolves to {ip}, which is {why}")
                raise EgressRefused(target, f"{host} resolves to {why}")
        return found

    def check_url(self, url: str | httpx.URL) -> tuple[IPAddress, ...]:
        """The addresses an http(s) URL's host resolves to, if the policy allows them.

        Raises `EgressRefused` (the URL shown without credentials), `httpx.InvalidURL`
        for what is not an absolute http(s) URL, and `OSError` when it does not resolve.
        """
        target = httpx.URL(url)
        if target.scheme not in ("http", "https") or not target.host:
            raise httpx.InvalidURL("not an absolute http:// or https:// URL")
        port = target.port or (443 if target.scheme == "https" else 80)
        try:
            return self.addresses(target.host, port)
        except EgressRefused as exc:
            shown = target.copy_with(username=None, password=None) if target.userinfo else target
            raise EgressRefused(str(shown), exc.reason) from None

    def transport(
        self, *, verify: ssl.SSLContext | bool = True, limits: httpx.Limits | None = None
    ) -> httpx.HTTPTransport:
        """An httpx transport whose every connection is checked and pinned."""
        return _CheckedTransport(self, verify=verify, limits=limits or httpx.Limits())

    def client(
        self,
        *,
        timeout: float | httpx.Timeout = 30.0,
        verify: ssl.SSLContext | bool = True,
        follow_redirects: bool = False,
        headers: dict[str, str] | None = None,
    ) -> httpx.Client:
        """An httpx client on `transport()`, ignoring proxy variables (`trust_env=False`)."""
        return httpx.Client(
            transport=self.transport(verify=verify),
            trust_env=False,
            timeout=timeout,
            follow_redirects=follow_redirects,
            max_redirects=MAX_REDIRECTS,
            headers=headers,
        )


class _CheckingBackend(httpcore.SyncBackend):
    """httpcore's sockets, opened only to addresses the policy just checked.

    httpcore hands `connect_tcp` the URL's host and later starts TLS with that name for
    SNI and certificate checks; only the TCP connection goes to the checked address.
    """

    def __init__(self, policy: EgressPolicy) -> None:
        self._policy = policy

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        try:
            addresses = self._policy.addresses(host, port)
        except OSError as exc:
            raise httpcore.ConnectError(str(exc) or type(exc).__name__) from exc
        failure: Exception | None = None
        for ip in addresses:
            try:
                return super().connect_tcp(str(ip), port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None  # addresses() never returns an empty tuple
        raise failure


class _CheckedTransport(httpx.HTTPTransport):
    """`httpx.HTTPTransport` with the connection pool on a `_CheckingBackend`.

    httpx 0.28 takes no network backend, so the pool it would build is replaced by one
    with the same settings (no proxy; the checks would otherwise apply to the proxy).
    """

    def __init__(
        self, policy: EgressPolicy, *, verify: ssl.SSLContext | bool, limits: httpx.Limits
    ) -> None:
        # No super().__init__(): its pool (and its SSL context) would be thrown away.
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify, trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_CheckingBackend(policy),
        )


# -- the policy of this process ----------------------------------------------------------

_lock = threading.Lock()


@cache
def _default() -> EgressPolicy:
    from .config import Settings  # config imports this module

    return EgressPolicy(Allowlist.parse(Settings.from_env().http_allow))


def default_policy() -> EgressPolicy:
    """The policy of this process, from `STEPSTREAM_HTTP_ALLOW` when first used."""
    with _lock:
        return _default()


def reset_default_policy() -> None:
    """Forget the policy, so the next use reads the environment again (for tests)."""
    with _lock:
        _default.cache_clear()


def check_url(url: str | httpx.URL) -> tuple[IPAddress, ...]:
    """`EgressPolicy.check_url` under this process's policy."""
    return default_policy().check_url(url)


def client(
    *,
    timeout: float | httpx.Timeout = 30.0,
    verify: ssl.SSLContext | bool = True,
    follow_redirects: bool = False,
    headers: dict[str, str] | None = None,
) -> httpx.Client:
    """`EgressPolicy.client` under this process's policy."""
    return default_policy().client(
        timeout=timeout, verify=verify, follow_redirects=follow_redirects, headers=headers
    )
