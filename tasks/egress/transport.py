"""An httpx transport whose connections go only to addresses the policy just checked."""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import httpcore
import httpx

if TYPE_CHECKING:
    from .policy import EgressPolicy  # the policy module imports this one


class CheckingBackend(httpcore.SyncBackend):
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


class CheckedTransport(httpx.HTTPTransport):
    """`httpx.HTTPTransport` with the connection pool on a `CheckingBackend`.

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
            network_backend=CheckingBackend(policy),
        )
