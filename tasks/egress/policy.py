"""The egress policy: a host resolved once, every address it resolves to checked, and
clients whose connections go only to checked addresses; and the policy of this process,
read from `STEPSTREAM_HTTP_ALLOW`."""

from __future__ import annotations

import ipaddress
import socket
import ssl
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache

import httpx

from ..errors import ToolFailure
from .addresses import IPAddress, non_public
from .allowlist import ALLOW_VARIABLE, Allowlist
from .transport import CheckedTransport

#: `(host, port)` to the addresses it resolves to, as strings.
Resolver = Callable[[str, int], Iterable[str]]


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
        return CheckedTransport(self, verify=verify, limits=limits or httpx.Limits())

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


# -- the policy of this process ----------------------------------------------------------

_lock = threading.Lock()


@cache
def _default() -> EgressPolicy:
    from ..config import Settings  # config imports this package

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
