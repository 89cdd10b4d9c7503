"""Reads of runs' event streams: pages of events, the ends of a stream, and the reads
of the web's event hub (replays, cursor checks, wake-ups, and its blocking tail).

The store reads streams on its own client (`RunStore.read_events`,
`RunStore.read_retained`); the hub reads them through `StreamReads`, on connections
of its own from the same client factory, so that streaming never waits for the
request pool. Either way a Redis that fails a read raises `BackendUnavailable`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import redis

from . import keys, redis_client
from .events import Event, Retained, first_id_after, id_key, retained_of
from .redis_client import backend_errors


def decode_entries(entries: list[Any]) -> list[Event]:
    """The events of stream entries as XRANGE and XREAD return them (unreadable ones
    left out, and logged)."""
    events = (Event.decode(entry_id, fields.get("data", "")) for entry_id, fields in entries)
    return [e for e in events if e is not None]


def read_events(client: redis.Redis, run_id: str, after: str, count: int) -> list[Event]:
    """Up to `count` events strictly after stream id `after` ("0" for the beginning)."""
    start = first_id_after(after)
    if start is None:
        return []
    entries = client.xrange(keys.run_events(run_id), min=start, max="+", count=count)
    return decode_entries(cast("list[Any]", entries))


def read_retained(
    client: redis.Redis, run_id: str, page: tuple[str, int] | None = None
) -> tuple[bool, Retained, list[Event]]:
    """Whether the run exists, the ends of its stream, and (with `page`, an `after` id
    and a count) the events after that id: read together in one transaction, so that
    trimming cannot fall between the check of a cursor and the read it allows."""
    stream = keys.run_events(run_id)
    pipe = client.pipeline(transaction=True)
    pipe.exists(keys.run(run_id))
    pipe.xrange(stream, min="-", max="+", count=1)
    pipe.xrevrange(stream, max="+", min="-", count=1)
    start = first_id_after(page[0]) if page else None
    if page and start is not None:
        pipe.xrange(stream, min=start, max="+", count=page[1])
    exists, head, tail, *rest = pipe.execute()
    return bool(exists), retained_of(head, tail), decode_entries(rest[0] if rest else [])


@dataclass(frozen=True)
class ReplayPage:
    """One page of a replay, read in one transaction with what it is judged by."""

    #: The run's status; None when the run does not exist (or expired).
    status: str | None
    #: The first event the stream keeps (`last_id` here is that event's too).
    head: Retained
    events: list[Event]
    #: The id of the page's last entry (None for an empty page): the next page starts
    #: after it, even when that entry could not be decoded.
    last_id: str | None

    def trimmed_past(self, cursor: str) -> bool:
        """Whether trimming dropped events after `cursor`: the stream lost its start and
        the first event it keeps is later than the cursor."""
        first = self.head.first_id
        return bool(self.head.trimmed and first) and id_key(cursor) < id_key(str(first))


@dataclass(frozen=True)
class StreamBatch:
    """What one blocking read returned of one stream."""

    stream: str
    #: The id of the last entry read: where the next read of the stream starts.
    last_id: str
    entries: list[Any]

    def events(self) -> list[Event]:
        return decode_entries(self.entries)


class StreamReads:
    """Reads of run streams on a client of their own (the hub's)."""

    def __init__(self, client: redis.Redis) -> None:
        self._redis = client

    @classmethod
    def connect(cls, redis_url: str, **options: Any) -> StreamReads:
        """On a new client from `redis_client.connect` (which takes `options`)."""
        return cls(redis_client.connect(redis_url, **options))

    def close(self) -> None:
        """Close the client's connections (those in use close as they come back)."""
        self._redis.connection_pool.disconnect()

    @backend_errors
    def retained(self, run_id: str) -> tuple[bool, Retained]:
        """Whether the run exists, and the ends of its stream (for checking a cursor)."""
        exists, retained, _ = read_retained(self._redis, run_id)
        return exists, retained

    @backend_errors
    def replay_page(self, run_id: str, start: str, count: int) -> ReplayPage:
        """Up to `count` events from id `start` on, with the run's status and the first
        event kept, in one transaction."""
        stream = keys.run_events(run_id)
        pipe = self._redis.pipeline(transaction=True)
        pipe.hget(keys.run(run_id), "status")
        pipe.xrange(stream, min="-", max="+", count=1)
        pipe.xrange(stream, min=start, max="+", count=count)
        status, head, entries = cast("tuple[str | None, list[Any], list[Any]]", pipe.execute())
        return ReplayPage(
            status,
            retained_of(head, head),
            decode_entries(entries),
            entries[-1][0] if entries else None,
        )

    @backend_errors
    def wake(self, key: str) -> None:
        """Append to stream `key` (kept an hour at most): a blocking read of it returns."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.xadd(key, {"w": "1"}, maxlen=16, approximate=False)
        pipe.expire(key, 3600)
        pipe.execute()

    @backend_errors
    def tail(self, cursors: dict[str, str], count: int, block_s: float) -> list[StreamBatch]:
        """What the streams hold after their cursors, waiting up to `block_s` for
        anything to come (one XREAD BLOCK over all of them)."""
        streams: dict[Any, Any] = dict(cursors)
        reply = self._redis.xread(streams, count=count, block=int(block_s * 1000))
        return [
            StreamBatch(stream, entries[-1][0], entries)
            for stream, entries in cast("list[Any]", reply) or []
        ]

    @backend_errors
    def last_id(self, stream: str) -> str | None:
        """The id of the stream's last entry; None when it has none (or is gone)."""
        last = cast("list[Any]", self._redis.xrevrange(stream, max="+", min="-", count=1))
        return str(last[0][0]) if last else None

    @backend_errors
    def between(self, stream: str, start: str, end: str) -> list[Event]:
        """The events from id `start` to id `end`, both included."""
        return decode_entries(cast("list[Any]", self._redis.xrange(stream, min=start, max=end)))

    @backend_errors
    def missing(self, streams: list[str]) -> list[str]:
        """Those of `streams` that no longer exist (their run expired or was deleted)."""
        pipe = self._redis.pipeline(transaction=False)
        for stream in streams:
            pipe.exists(stream)
        return [s for s, exists in zip(streams, pipe.execute(), strict=True) if not exists]
