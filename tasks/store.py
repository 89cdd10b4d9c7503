"""The run store: run and step state in Redis, changed only through the run scripts.

Each state change and the event that reports it are one Lua call (`lua/*.lua`), so a
snapshot and the stream never disagree. Reads that must be consistent with each other
(the run hash and its steps) are taken in one MULTI.

`RunStore` is made of one part per concern, each its own module:

- `scripts`: the scripts loaded, and what the parts share (`StorePart`);
- `run_records`: what a run's records hold when it is created (`create_args`), and the
  ready steps the scripts hand back (`ReadyStep`);
- `transitions`: creating runs and moving them forward, one script per change;
- `run_index`: the listing indexes, their upkeep as runs expire, and listing;
- `run_reads`: runs as the API shows them, and pages of their events;
- `watch`: the sweeper's reads of the watch indexes, and its lock;
- `worker_rows` (`store.workers`): the worker registry;
- `idempotency` (`store.idempotency`): the claims of Idempotency-Keys;
- `stream_reads`: reads of event streams, also on the web hub's own connections.

The client is private to these modules: nothing else reaches Redis through the store
but by its methods, and every failure of Redis they meet is `BackendUnavailable`.
"""

from __future__ import annotations

import redis

from . import redis_client
from .config import Settings
from .feed import AllEventsFeed
from .idempotency import IdempotencyKeys
from .redis_client import backend_errors
from .run_index import INDEXES_VERSION, SWEEP_BATCH, RunIndex
from .run_reads import RunReads
from .run_records import CreatedRun, ReadyStep
from .scripts import register_scripts
from .transitions import AttemptInputs, StepStart, SweepVerdict, Transition, Transitions
from .watch import WatchReads
from .worker_rows import WorkerRows

__all__ = [
    "INDEXES_VERSION",
    "SWEEP_BATCH",
    "AttemptInputs",
    "CreatedRun",
    "ReadyStep",
    "RunStore",
    "StepStart",
    "SweepVerdict",
    "Transition",
]


class RunStore(Transitions, RunIndex, RunReads, WatchReads):
    """Reads and changes runs. One instance per process; thread-safe like redis-py."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self._redis = client
        self.settings = settings
        self.feed = AllEventsFeed(client, settings.event_maxlen)
        self._scripts = register_scripts(client)
        #: The worker registry, on the store's client.
        self.workers = WorkerRows(client)
        #: Claims of Idempotency-Keys, on the store's client.
        self.idempotency = IdempotencyKeys(client)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        retry_s: float = 1.0,
        max_connections: int | None = None,
        client_name: str | None = None,
    ) -> RunStore:
        """A store whose calls ride out a Redis outage of up to `retry_s` seconds.

        Workers wait long (`STEPSTREAM_REDIS_RETRY_S`): a step's events must not be lost.
        The web waits briefly, so that a request answers 503 rather than hanging, and
        caps its connections (`max_connections`): callers beyond the cap wait their turn.
        Either way a Redis that stops answering fails a call after its read timeout.
        """
        client = redis_client.connect(
            settings.redis_url,
            retry_s=retry_s,
            max_connections=max_connections,
            client_name=client_name,
        )
        return cls(client, settings)

    @backend_errors
    def ping(self) -> None:
        """Raise `BackendUnavailable` unless Redis answers."""
        self._redis.ping()

    @property
    def connection_pool(self) -> redis.ConnectionPool:
        """The pool of the store's connections (to count them, or hold them all)."""
        return self._redis.connection_pool

    def close(self) -> None:
        """Close the store's connections."""
        self._redis.close()
