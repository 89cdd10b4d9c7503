"""Every Redis client of stepstream is built here, and here it is said which errors
mean "the backend is away".

A Redis that stops answering without closing its connections (a failover, a network
partition, a paused VM, a full disk stalling AOF writes) must make a call fail within a
bound instead of hanging it: each client has a read timeout, a connect timeout, TCP
keepalive and a health check of idle connections, and its retries stop at a deadline
rather than after a count of tries, so a try that waited out its read timeout counts
against the same budget as one refused at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import ContextDecorator
from types import TracebackType
from typing import Any, Literal, TypeVar

import redis
from kombu.exceptions import OperationalError
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from .errors import BackendUnavailable, BackendUnreachable

T = TypeVar("T")

#: How long one reply may take. Every command stepstream sends outside the hub's
#: blocking read is answered in milliseconds by a healthy Redis; a reply this late
#: means it is not answering, and the call fails (and is retried within its budget).
READ_TIMEOUT_S = 2.0
#: How long opening a TCP connection may take.
CONNECT_TIMEOUT_S = 2.0
#: A connection idle this long is checked with a PING before it is used again.
HEALTH_CHECK_S = 30
#: How long a caller of a capped pool waits for a free connection before it is told
#: that Redis is unavailable (all connections busy for this long means it is stuck).
POOL_WAIT_S = 1.5
#: The longest pause between two tries to reach a Redis that went away.
RETRY_CAP_S = 1.0

#: Errors that mean Redis or the broker cannot serve a request now, whatever the
#: request: gone, not answering, loading its data, out of memory, read-only after a
#: failover, busy with a script. The API answers them with 503; workers retry the
#: connection errors among them (kombu wraps the broker's in OperationalError).
UNAVAILABLE: tuple[type[Exception], ...] = (redis.RedisError, OperationalError, OSError)
#: Those of them that mean no answer came (refused, reset, timed out): a write may have
#: been applied all the same. The others were answered, and changed nothing.
UNREACHABLE: tuple[type[Exception], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    OperationalError,
    OSError,
)
#: Not a failure: a WATCHed key changed, and the caller's loop looks again.
WatchError = redis.WatchError
#: Errors of our own use of the client, not of the backend: a WATCH conflict that
#: escaped its loop, a value the client cannot send. Never translated: a bug is a bug
#: (500, its traceback logged), not an outage to retry.
OUR_OWN: tuple[type[Exception], ...] = (redis.WatchError, redis.DataError)


def as_backend_error(exc: BaseException) -> BackendUnavailable:
    """The project's error for a low-level one of `UNAVAILABLE`."""
    if isinstance(exc, UNREACHABLE):
        return BackendUnreachable.from_error(exc)
    return BackendUnavailable.from_error(exc)


class _BackendErrors(ContextDecorator):
    """Raise `BackendUnavailable` (or `BackendUnreachable`) in place of the redis, kombu
    and socket errors of `UNAVAILABLE`: `with backend_errors:` or `@backend_errors`.

    The one place where the client libraries' errors become the project's: the store,
    the hub's reads, the heartbeat and the web's publishes go through it, so their
    callers catch `BackendUnavailable` and never name a library's exception.
    """

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> Literal[False]:
        if exc is not None and isinstance(exc, UNAVAILABLE) and not isinstance(exc, OUR_OWN):
            raise as_backend_error(exc) from exc
        return False


backend_errors = _BackendErrors()


class OutageRetry(Retry):
    """Retry connection errors and timeouts until `budget_s` has passed since the call.

    Every run script is safe to repeat after a reply was lost (each recognises its own
    earlier effect), so redis-py's retry of the whole call is exactly what is needed.
    redis-py also retries a connection's handshake inside a command's retry with the
    same policy: a deadline bounds that nesting where a count of tries multiplies.
    """

    def __init__(self, budget_s: float) -> None:
        # Pauses of 10, 20, 40, ... ms up to RETRY_CAP_S: the first tries ride out a
        # blip, the later ones pace themselves.
        backoff = ExponentialBackoff(cap=RETRY_CAP_S, base=0.005)
        # The count is what redis-py reports; the deadline is what stops the tries.
        retries, waited = 0, 0.0
        while waited < budget_s:
            retries += 1
            waited += backoff.compute(retries)
        super().__init__(backoff, retries)
        self.budget_s = budget_s

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, OutageRetry) and self.budget_s == other.budget_s

    __hash__ = Retry.__hash__

    def call_with_retry(
        self,
        do: Callable[[], T],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> T:
        deadline = time.monotonic() + self.budget_s
        self._backoff.reset()  # type: ignore[no-untyped-call]
        failures = 0
        while True:
            try:
                return do()
            except self._supported_errors as error:
                if is_retryable is not None and not is_retryable(error):
                    raise
                failures += 1
                if with_failure_count:
                    fail(error, failures)
                else:
                    fail(error)
                pause = self._backoff.compute(failures)
                if time.monotonic() + pause >= deadline:
                    raise error
                time.sleep(pause)


def connect(
    url: str,
    *,
    client_name: str | None = None,
    retry_s: float = 1.0,
    read_timeout_s: float = READ_TIMEOUT_S,
    max_connections: int | None = None,
    health_check_s: int = HEALTH_CHECK_S,
    decode_responses: bool = True,
    pool_wait_s: float = POOL_WAIT_S,
) -> redis.Redis:
    """A client of the Redis at `url` whose calls fail within a bound when it hangs.

    A call fails after about `retry_s` plus one `read_timeout_s`. A caller that blocks
    on the server (XREAD BLOCK, BRPOP) passes a `read_timeout_s` longer than its block.
    With `max_connections` the pool is capped and a caller waits at most `pool_wait_s`
    for a connection.
    """
    options: dict[str, Any] = {
        "decode_responses": decode_responses,
        "socket_timeout": read_timeout_s,
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
        # A peer gone without a word (a partition) is found by the kernel's probes even
        # on a connection nobody uses; redis-py's defaults tune the probe timing.
        "socket_keepalive": True,
        "health_check_interval": health_check_s,
        "retry": OutageRetry(retry_s),
        # Names the connections in CLIENT LIST, so they can be counted per role.
        "client_name": client_name,
    }
    if max_connections is None:
        return redis.Redis.from_url(url, **options)
    pool = redis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=pool_wait_s, **options
    )
    return redis.Redis(connection_pool=pool)
