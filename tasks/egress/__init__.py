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

The package, by concern: `addresses` (which addresses are public), `allowlist`
(`STEPSTREAM_HTTP_ALLOW` parsed), `policy` (`EgressPolicy` and this process's policy) and
`transport` (the httpx transport that checks each connection). Import from here.
"""

from __future__ import annotations

from .addresses import IPAddress, IPNetwork, non_public
from .allowlist import ALLOW_VARIABLE, Allowlist, parse_allow
from .policy import (
    MAX_REDIRECTS,
    EgressPolicy,
    EgressRefused,
    Resolver,
    check_url,
    client,
    default_policy,
    reset_default_policy,
    system_resolver,
)

__all__ = [
    "ALLOW_VARIABLE",
    "MAX_REDIRECTS",
    "Allowlist",
    "EgressPolicy",
    "EgressRefused",
    "IPAddress",
    "IPNetwork",
    "Resolver",
    "check_url",
    "client",
    "default_policy",
    "non_public",
    "parse_allow",
    "reset_default_policy",
    "system_resolver",
]
