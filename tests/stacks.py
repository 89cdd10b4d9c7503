"""Every Redis database the suite uses, from one table, and waits on a run's stream.

The session's redis-server has `devtools.redis_server.DATABASES` databases. Two rows of
the table are fixed: the shared store (the `r` fixture, worker w1, `app_factory`'s
default) and the shared broker w1 consumes. Every other database is handed out by
`Databases`: once per ask, emptied first, never twice in a session. A test that needs
"a store database and a broker database of its own" (workers that must take only its
runs, a store no worker sweeps, a broker nobody consumes) asks for one and so never
meets another test's data or workers, whatever order the tests run in.

A Redis a test starts for itself uses the same layout (`layout`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis

from tasks import keys

#: The shared store: the `r` fixture, the session worker, `app_factory`'s default.
STORE_DB = 0
#: The shared broker: the session worker consumes it.
BROKER_DB = 1
#: The first database `Databases` hands out; those below it are the fixed rows.
FIRST_FREE_DB = 2

Event = dict[str, Any]


def db_url(server_url: str, db: int) -> str:
    """The URL of database `db` on the Redis at `server_url` (any database of it)."""
    return f"{server_url.rsplit('/', 1)[0]}/{db}"


def layout(server_url: str) -> tuple[str, str]:
    """The store and broker URLs of the fixed rows on the Redis at `server_url`."""
    return db_url(server_url, STORE_DB), db_url(server_url, BROKER_DB)


@dataclass(frozen=True)
class Stack:
    """A store database and a broker database of one test's own, both emptied, and
    the environment that points a worker or web process at them."""

    store_db: int
    broker_db: int
    redis_url: str
    broker_url: str
    env: dict[str, str] = field(repr=False)

    @property
    def urls(self) -> dict[str, str]:
        """`app_factory` overrides for an app on this stack."""
        return {"redis_url": self.redis_url, "broker_url": self.broker_url}

    def store(self) -> redis.Redis:
        """A new client of the store database (text replies); the caller closes it."""
        return redis.Redis.from_url(self.redis_url, decode_responses=True)


class Databases:
    """Hands out the databases of the session's Redis past the fixed rows, each once."""

    def __init__(self, server_url: str) -> None:
        self.server_url = server_url
        self._next = FIRST_FREE_DB
        client = redis.Redis.from_url(server_url)
        try:
            self.total = int(client.config_get("databases")["databases"])
        finally:
            client.close()

    def take(self) -> int:
        """A database number nobody has had in this session, emptied."""
        if self._next >= self.total:
            raise RuntimeError(
                f"all {self.total} Redis databases are handed out: raise DATABASES in "
                "devtools/redis_server.py"
            )
        db, self._next = self._next, self._next + 1
        client = redis.Redis.from_url(self.url(db))
        try:
            client.flushdb()
        finally:
            client.close()
        return db

    @property
    def handed_out(self) -> int:
        return self._next - FIRST_FREE_DB

    def url(self, db: int) -> str:
        return db_url(self.server_url, db)

    def fresh_url(self) -> str:
        """The URL of a database nobody else uses, emptied: a quiet store (no worker
        sweeps it, none beats there) or an idle broker (no worker consumes it)."""
        return self.url(self.take())

    def stack(self, base_env: dict[str, str], **env: str) -> Stack:
        """A store and a broker database of their own; `env` goes over `base_env`."""
        store_db, broker_db = self.take(), self.take()
        store_url, broker_url = self.url(store_db), self.url(broker_db)
        full = {
            **base_env,
            **env,
            "STEPSTREAM_REDIS_URL": store_url,
            "STEPSTREAM_BROKER_URL": broker_url,
        }
        return Stack(store_db, broker_db, store_url, broker_url, full)


# -- waits on a run's stream -----------------------------------------------------------

#: The longest single XREAD BLOCK, below any client's socket timeout.
_BLOCK_MS = 500


def _decode(fields: dict[Any, Any]) -> Event:
    data = fields.get("data", fields.get(b"data"))
    event: Event = json.loads(data)
    return event


def wait_for_event(
    client: redis.Redis,
    run_id: str,
    predicate: Callable[[Event], bool],
    timeout: float = 15.0,
    what: str = "the event",
) -> list[Event]:
    """The run's events from its first, read with XREAD BLOCK (no polling) up to and
    including the first one that satisfies `predicate`; fail after `timeout`."""
    stream = keys.run_events(run_id)
    events: list[Event] = []
    last = "0"
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        block = max(1, min(_BLOCK_MS, int(left * 1000)))
        for _, entries in client.xread({stream: last}, count=1000, block=block) or []:
            for entry_id, fields in entries:
                last = entry_id
                events.append(_decode(fields))
                if predicate(events[-1]):
                    return events


def events_until_finished(
    client: redis.Redis, run_id: str, timeout: float = 15.0, what: str = "run_finished"
) -> list[Event]:
    """The run's events once it has finished (`run_finished` last), by XREAD BLOCK."""
    return wait_for_event(
        client, run_id, lambda event: event["type"] == "run_finished", timeout, what
    )
