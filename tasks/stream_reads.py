"""Reads of runs' event streams: pages of events, the ends of a stream, and the reads
of the web's event hub (replays, cursor checks, wake-ups, and its blocking tail).

The store reads streams on its own client (`RunStore.read_events`,
`RunStore.read_retained`); the hub reads them through `StreamReads`, on connections
of its own from the same client factory, so that streaming never waits for the
request pool. Either way a Redis that fails a read raises `BackendUnavailable`.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis

from . import keys, redis_client
from .errors import BackendUnavailable
from .events import Event, Retained, first_id_after, id_key, retained_of
from .redis_client import backend_errors

#: Stream replies `StreamReads` takes as Redis sends them: an entry's fields stay the
#: flat list `[name, value, ...]`, without a dict made per entry (replays are mostly
#: that work).
RAW_REPLIES = ("XRANGE", "XREVRANGE", "XREAD")


def decode_entries(entries: list[Any]) -> list[Event]:
    """The events of stream entries as XRANGE and XREAD return them (unreadable ones
    left out, and logged); fields as a dict or as Redis' flat list."""
    events = [Event.decode(entry_id, _data(fields)) for entry_id, fields in entries]
    return [e for e in events if e is not None]


def _data(fields: Any) -> Any:
    if type(fields) is list:
        if fields and fields[0] == "data":
            return fields[1]
        return dict(zip(fields[::2], fields[1::2], strict=False)).get("data", "")
    return fields.get("data", "") if fields else ""


def _as_dicts(entries: list[Any]) -> list[Any]:
    """Entries with their fields as dicts (as `retained_of` reads them)."""
    return [(entry_id, {"data": _data(fields)}) for entry_id, fields in entries]


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
    #: The ends of what the stream holds.
    retained: Retained
    events: list[Event]
    #: The id of the page's last entry (None for an empty page): the next page starts
    #: after it, even when that entry could not be decoded.
    last_id: str | None
    #: Whether the page holds as many entries as asked: more may follow at once. A
    #: shorter page read everything the stream held.
    full: bool = False

    @property
    def exists(self) -> bool:
        return self.status is not None

    def trimmed_past(self, cursor: str) -> bool:
        """Whether trimming dropped events after `cursor`: the stream lost its start and
        the first event it keeps is later than the cursor."""
        first = self.retained.first_id
        return bool(self.retained.trimmed and first) and id_key(cursor) < id_key(str(first))


def queue_page(pipe: Any, run_id: str, start: str | None, count: int) -> None:
    """The commands of one replay page (see `page_of`): the run's status, the ends of
    its stream and, from `start` (None: none), up to `count` entries."""
    stream = keys.run_events(run_id)
    pipe.hget(keys.run(run_id), "status")
    pipe.xrange(stream, min="-", max="+", count=1)
    pipe.xrevrange(stream, max="+", min="-", count=1)
    if start is not None:
        pipe.xrange(stream, min=start, max="+", count=count)


def page_of(replies: Sequence[Any], count: int) -> ReplayPage:
    status, head, tail, *rest = replies
    entries = rest[0] if rest else []
    return ReplayPage(
        status,
        retained_of(_as_dicts(head), _as_dicts(tail)),
        decode_entries(entries),
        entries[-1][0] if entries else None,
        full=bool(rest) and len(entries) >= count,
    )


class _Read:
    """One caller's page, waiting for a batch to carry it."""

    __slots__ = ("count", "done", "error", "lead", "replies", "run_id", "start")

    def __init__(self, run_id: str, start: str | None, count: int) -> None:
        self.run_id = run_id
        self.start = start
        self.count = count
        self.done = threading.Event()
        #: Set when it is this caller's turn to read a batch for everyone waiting.
        self.lead = False
        #: The page's replies as Redis sent them: each caller makes its own page of
        #: them (see `result`).
        self.replies: Sequence[Any] | None = None
        self.error: BaseException | None = None

    def result(self) -> ReplayPage:
        """The page, decoded here, by its caller: the one who read the batch does not
        decode everyone's events in one stretch that nothing else can interrupt (under
        gevent, 3-4 ms for a batch's 2,000 entries, ahead of every live delivery)."""
        if self.error is not None:
            raise self.error
        if self.replies is None:
            raise BackendUnavailable("the read carrying this page was abandoned")
        replies, self.replies = self.replies, None
        return page_of(replies, self.count)


class BatchedPages:
    """Replay pages of every caller, read many to a round trip.

    A storm of reconnections is a thousand callers each wanting a page at once: one
    round trip apiece would queue them on a few connections, and each of those round
    trips waits its turn on a busy process. Here callers queue, and one of them at a
    time reads the pages of everyone queued (up to `budget` entries) in one pipelined
    transaction, hands each its page and passes the turn to the next in line. Each
    page is read in one transaction with what it is judged by (status and the
    stream's ends), as a page read alone would be.
    """

    def __init__(self, client: redis.Redis, budget: int, pace_s: float = 0.0) -> None:
        self._redis = client
        self._budget = budget
        #: Seconds of pause per entry read before the next batch, while callers queue:
        #: a storm of replays drains at a bounded pace, leaving time to live delivery
        #: (and its clients); a lone replay never pauses.
        self._pace_s = pace_s
        self._pause_s = 0.0
        self._lock = threading.Lock()
        self._queue: collections.deque[_Read] = collections.deque()
        self._busy = False

    def page(self, run_id: str, start: str | None, count: int) -> ReplayPage:
        me = _Read(run_id, start, count)
        with self._lock:
            self._queue.append(me)
            lead = not self._busy
            self._busy = True
        if not lead:
            me.done.wait()
            if not me.lead:
                return me.result()
            if self._pause_s:
                time.sleep(self._pause_s)  # its turn, after the pause the last one left
        self._read_batch()
        return me.result()

    def _read_batch(self) -> None:
        """Read the pages at the front of the queue (this caller's first)."""
        with self._lock:
            batch = [self._queue.popleft()]
            spent = batch[0].count
            while self._queue and spent + self._queue[0].count <= self._budget:
                spent += self._queue[0].count
                batch.append(self._queue.popleft())
        read_entries = 0
        try:
            read_entries = self._execute(batch)
        except Exception as exc:
            for read in batch:
                read.error = exc
        finally:
            with self._lock:
                if self._queue:
                    self._pause_s = self._pace_s * read_entries
                    self._queue[0].lead = True
                    self._queue[0].done.set()
                else:
                    self._busy = False
            for read in batch:
                read.done.set()

    @backend_errors
    def _execute(self, batch: list[_Read]) -> int:
        """Read the batch's pages; returns how many entries they hold."""
        pipe = self._redis.pipeline(transaction=True)
        for read in batch:
            queue_page(pipe, read.run_id, read.start, read.count)
        replies = pipe.execute()
        i = entries = 0
        for read in batch:
            n = 4 if read.start is not None else 3
            read.replies = replies[i : i + n]
            if n == 4:
                entries += len(replies[i + 3])
            i += n
        return entries


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

    def __init__(self, client: redis.Redis, page_budget: int = 0, pace_s: float = 0.0) -> None:
        self._redis = client
        for command in RAW_REPLIES:
            client.set_response_callback(command, _as_is)
        #: Replay pages of many callers, pipelined (with a budget of entries per trip).
        self._pages = BatchedPages(client, page_budget, pace_s) if page_budget else None

    @classmethod
    def connect(
        cls, redis_url: str, page_budget: int = 0, pace_s: float = 0.0, **options: Any
    ) -> StreamReads:
        """On a new client from `redis_client.connect` (which takes `options`); with a
        `page_budget`, replay pages of concurrent callers share round trips (paced by
        `pace_s` per entry while they queue, see `BatchedPages`)."""
        return cls(redis_client.connect(redis_url, **options), page_budget, pace_s)

    def close(self) -> None:
        """Close the client's connections (those in use close as they come back)."""
        self._redis.connection_pool.disconnect()

    @backend_errors
    def retained(self, run_id: str) -> tuple[bool, Retained]:
        """Whether the run exists, and the ends of its stream (for checking a cursor)."""
        page = self.replay_page(run_id, None, 0)
        return page.exists, page.retained

    @backend_errors
    def replay_page(self, run_id: str, start: str | None, count: int) -> ReplayPage:
        """Up to `count` events from id `start` on (None: none), with the run's status
        and the ends of its stream, in one transaction."""
        if self._pages is not None:
            return self._pages.page(run_id, start, count)
        pipe = self._redis.pipeline(transaction=True)
        queue_page(pipe, run_id, start, count)
        return page_of(pipe.execute(), count)

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
        # As Redis sends it: pairs of a stream and its entries, or a map of them.
        raw = cast("Any", reply)
        found: Any = raw.items() if isinstance(raw, dict) else raw or []
        return [StreamBatch(stream, entries[-1][0], entries) for stream, entries in found]

    @backend_errors
    def last_id(self, stream: str) -> str | None:
        """The id of the stream's last entry; None when it has none (or is gone)."""
        return self.last_ids([stream])[stream]

    @backend_errors
    def last_ids(self, streams: list[str]) -> dict[str, str | None]:
        """The id of each stream's last entry (None for one that has none, or is gone),
        in one round trip however many streams."""
        pipe = self._redis.pipeline(transaction=False)
        for stream in streams:
            pipe.xrevrange(stream, max="+", min="-", count=1)
        replies = cast("list[list[Any]]", pipe.execute())
        return {s: str(r[0][0]) if r else None for s, r in zip(streams, replies, strict=True)}

    @backend_errors
    def between(self, stream: str, start: str, end: str) -> list[Event]:
        """The events from id `start` to id `end`, both included."""
        return self.stretches({stream: (start, end)})[stream]

    @backend_errors
    def stretches(self, spans: dict[str, tuple[str, str]]) -> dict[str, list[Event]]:
        """For each stream, its events from id `start` to id `end`, both included, in one
        round trip however many streams."""
        pipe = self._redis.pipeline(transaction=False)
        for stream, (start, end) in spans.items():
            pipe.xrange(stream, min=start, max=end)
        replies = cast("list[list[Any]]", pipe.execute())
        return {s: decode_entries(r) for s, r in zip(spans, replies, strict=True)}

    @backend_errors
    def missing(self, streams: list[str]) -> list[str]:
        """Those of `streams` that no longer exist (their run expired or was deleted)."""
        pipe = self._redis.pipeline(transaction=False)
        for stream in streams:
            pipe.exists(stream)
        return [s for s, exists in zip(streams, pipe.execute(), strict=True) if not exists]


def _as_is(response: Any, **options: Any) -> Any:
    return response
