"""One reader per web process: live events of every followed run, fanned out.

Each WebSocket or SSE subscriber first replays the run's history itself, in `XRANGE`
pages, and then joins the hub with the id of the last event it has. The hub's thread
holds one Redis connection and one blocking `XREAD` over every stream that has
subscribers, and copies what it reads into the subscribers' bounded queues. Replays,
cursor checks and wake-ups use a small pool of the hub's own: the request pool is never
borrowed, so a burst of API requests can neither stall joiners nor make the hub drop
its subscribers. So the Redis connections of a web process stay a handful however many
people watch.

The seam between replay and live is handled in the hub's thread, where every delivery
of a stream happens, in order: a stream new to the hub is read from the joiner's last
id; a joiner behind the hub's cursor of that stream gets the missing stretch with an
`XRANGE` before anything newer; a joiner ahead skips what it already has. No gap and
no duplicate. A joiner's id is checked against the stream's last id before it can
become the hub's position: a cursor from the future would otherwise hold the shared
read past every event still to come, for everyone following that run.

A subscriber with more than `QUEUE_LIMIT` events, or `QUEUE_BYTES` bytes of them,
waiting is dropped (it may resume with `after`), so a slow one never holds up the
others nor makes memory grow. When Redis is unreachable, or the process is stopping,
every subscriber is told to go.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any, cast

import redis

from tasks import keys, redis_client
from tasks.events import Event, Retained, first_id_after, id_key, read_retained, retained_of
from tasks.statuses import TERMINAL_RUN

log = logging.getLogger(__name__)

#: Events a subscriber may have waiting before it is dropped as too slow.
QUEUE_LIMIT = 10_000
#: Bytes of event JSON a subscriber may have waiting before it is dropped as too slow.
QUEUE_BYTES = 16 * 1024 * 1024
#: The hub's own connections to Redis for replays, cursor checks and wake-ups.
SIDE_CONNECTIONS = 3
#: Every connection a hub may hold: its reader and its side pool.
HUB_CONNECTIONS = 1 + SIDE_CONNECTIONS
#: How long a replay waits for a side connection, and a side command for Redis.
SIDE_TIMEOUT_S = 5.0
#: Entries one XREAD or XRANGE page returns per stream.
PAGE = 1000
#: How long one blocking read waits; streams whose run expired are noticed this often.
BLOCK_S = 5.0


class Gone(Exception):
    """The subscription ended for a reason other than the run finishing."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        #: "slow" (fell too far behind), "unavailable" (Redis), "shutdown", "expired"
        #: (the run's keys are gone), "cursor" (beyond the end of the stream) or
        #: "trimmed" (events after the cursor were dropped by MAXLEN trimming).
        self.reason = reason


class Subscription:
    """One follower of one run: the hub fills it, the request handler drains it."""

    def __init__(
        self, run_id: str, last_id: str, limit: int, byte_limit: int = QUEUE_BYTES
    ) -> None:
        self.run_id = run_id
        self.stream = keys.run_events(run_id)
        #: The id of the last event handed to this subscriber (replay included).
        self.last_id = last_id
        self.limit = limit
        self.byte_limit = byte_limit
        self._queue: collections.deque[Event] = collections.deque()
        #: Bytes of event JSON in the queue: a few huge events weigh as much as many.
        self._bytes = 0
        self._ready = threading.Condition()
        self._ended: str | None = None

    def push(self, events: list[Event]) -> None:
        """Called by the hub's thread: never blocks."""
        with self._ready:
            if self._ended:
                return
            last = id_key(self.last_id)
            fresh = [e for e in events if id_key(e.id) > last]
            if not fresh:
                return
            size = sum(len(e.raw) for e in fresh)
            if len(self._queue) + len(fresh) > self.limit or self._bytes + size > self.byte_limit:
                self._queue.clear()  # what it has not taken is dropped with it
                self._bytes = 0
                self._ended = "slow"
            else:
                self._queue.extend(fresh)
                self._bytes += size
                self.last_id = fresh[-1].id
            self._ready.notify()

    def end(self, reason: str) -> None:
        with self._ready:
            if not self._ended:
                self._ended = reason
            self._ready.notify()

    def take(self, timeout: float) -> list[Event]:
        """What arrived, waiting up to `timeout`; raises Gone when dropped."""
        with self._ready:
            self._ready.wait_for(lambda: bool(self._queue) or self._ended is not None, timeout)
            if self._queue:
                batch = list(self._queue)
                self._queue.clear()
                self._bytes = 0
                return batch
            if self._ended is not None:
                raise Gone(self._ended)
            return []

    @property
    def ended(self) -> str | None:
        return self._ended


class Hub:
    """The process's reader; started on the first subscription (and again after a fork)."""

    def __init__(
        self,
        redis_url: str,
        queue_limit: int = QUEUE_LIMIT,
        client_name: str | None = None,
        queue_bytes: int = QUEUE_BYTES,
    ) -> None:
        # Connections of its own, never the request pool's: a busy request pool must
        # never hold up the hub.
        self.redis_url = redis_url
        self.queue_limit = queue_limit
        self.queue_bytes = queue_bytes
        self.client_name = client_name
        #: For replays, cursor checks and wake-ups: a pool of the hub's own. A Redis
        #: that stops answering fails these within the timeouts instead of hanging.
        self.side = redis_client.connect(
            redis_url,
            client_name=client_name,
            retry_s=0,
            read_timeout_s=SIDE_TIMEOUT_S,
            max_connections=SIDE_CONNECTIONS,
            pool_wait_s=SIDE_TIMEOUT_S,
        )
        self._lock = threading.Lock()
        self._joining: list[Subscription] = []
        self._leaving: list[Subscription] = []
        self._subs: dict[str, set[Subscription]] = {}
        self._cursors: dict[str, str] = {}
        self._pid = -1
        self._stopping = False
        # A stream of this hub's own in the XREAD set: appending to it wakes the read
        # when a subscriber joins, so joining never waits for the block to time out.
        self._wake_key = f"stepstream:hub:{uuid.uuid4().hex}"
        self._wake_cursor = "0-0"
        #: A wake-up was sent that the hub's thread has not acted on yet: joiners
        #: arriving meanwhile need none of their own.
        self._wake_pending = False

    # -- for request handlers ----------------------------------------------------------

    def retained(self, run_id: str) -> tuple[bool, Retained]:
        """Whether the run exists, and the ends of its stream (for checking a cursor)."""
        exists, retained, _ = read_retained(self.side, run_id)
        return exists, retained

    def follow(self, run_id: str, after: str, wait_s: float) -> Iterator[list[Event]]:
        """Replay a run from `after`, then follow it live until `run_finished`.

        Yields events in batches as they come (a replay page, what arrived live) and an
        empty batch after each `wait_s` of silence (for keepalives); the last batch ends
        with `run_finished`. Raises Gone when the subscriber is dropped, or when
        trimming dropped events it has not seen yet ("trimmed": never a silent gap),
        and redis errors when replaying fails.
        """
        cursor = after if after not in ("", "0") else "0-0"
        # From the beginning, the first event kept is where the reader starts; from a
        # cursor, every page must start right after what the reader has.
        check_gap = cursor != "0-0"
        stream = keys.run_events(run_id)
        while True:  # replay, page by page, on this request's own time
            start = first_id_after(cursor)
            if start is None:
                raise Gone("cursor")  # the largest id there is: nothing can follow it
            pipe = self.side.pipeline(transaction=True)
            pipe.hget(keys.run(run_id), "status")
            pipe.xrange(stream, min="-", max="+", count=1)
            pipe.xrange(stream, min=start, max="+", count=PAGE)
            status, head, entries = cast("tuple[str | None, list[Any], list[Any]]", pipe.execute())
            if check_gap and _trimmed_past(head, cursor):
                raise Gone("trimmed")
            check_gap = True
            if not entries:
                if status is None or status in TERMINAL_RUN:
                    return  # finished (run_finished was replayed already) or expired
                break
            cursor = entries[-1][0]
            page, final = _until_final(_decode(entries))
            yield page
            if final:
                return
        sub = self.subscribe(run_id, cursor)
        try:
            while True:
                batch, final = _until_final(sub.take(wait_s))
                yield batch
                if final:
                    return
        except Gone as gone:
            if gone.reason == "expired":
                return
            raise
        finally:
            self.unsubscribe(sub)

    def subscribe(self, run_id: str, last_id: str) -> Subscription:
        sub = Subscription(run_id, last_id, self.queue_limit, self.queue_bytes)
        with self._lock:
            if self._stopping:
                sub.end("shutdown")
                return sub
            self._joining.append(sub)
            wake = not self._wake_pending
            self._wake_pending = True
        # After joining: a reader that stopped for want of subscribers is started again.
        self._ensure_thread()
        if wake:
            self._wake()
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        sub.end("left")
        with self._lock:
            self._leaving.append(sub)

    def stop(self) -> None:
        """Tell every subscriber the process is going away (WebSocket close 1001)."""
        with self._lock:
            self._stopping = True
            subs = self._everyone()
        for sub in subs:
            sub.end("shutdown")
        self._wake()
        # The reader closes its own connection as its thread ends.
        self.side.connection_pool.disconnect()

    def subscriber_count(self) -> int:
        with self._lock:
            return len(self._everyone())

    def _everyone(self) -> list[Subscription]:
        """Every subscriber, joined or joining (call with the lock held)."""
        return [s for group in self._subs.values() for s in group] + self._joining

    # -- the hub's thread --------------------------------------------------------------

    def _ensure_thread(self) -> None:
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid == os.getpid():
                return
            # A forked child inherits no thread (and must not share connections).
            self._subs.clear()
            self._cursors.clear()
            threading.Thread(target=self._run, name="stepstream-hub", daemon=True).start()
            self._pid = os.getpid()

    def _wake(self) -> None:
        try:
            pipe = self.side.pipeline(transaction=False)
            pipe.xadd(self._wake_key, {"w": "1"}, maxlen=16, approximate=False)
            pipe.expire(self._wake_key, 3600)
            pipe.execute()
        except redis.RedisError:
            # The joiner is then seen when the current read times out (BLOCK_S), or the
            # hub's own read fails too and ends everyone.
            with self._lock:
                self._wake_pending = False

    def _run(self) -> None:
        # Its read timeout outlasts the blocking read; no health check (it is never idle).
        reader = redis_client.connect(
            self.redis_url,
            client_name=self.client_name,
            retry_s=0,
            read_timeout_s=BLOCK_S + 10,
            health_check_s=0,
        )
        pause = 0.1
        try:
            while True:
                try:
                    self._loop(reader)
                    return
                except redis.RedisError as exc:
                    log.warning("event hub: %s; dropping subscribers so they resume", exc)
                    self._drop_all("unavailable")
                    with self._lock:
                        if not self._joining:
                            # Nobody is waiting: stop here; the next subscriber starts afresh.
                            self._pid = -1
                            return
                    time.sleep(pause)  # back off while Redis is away
                    pause = min(pause * 2, 2.0)
        finally:
            reader.close()

    def _loop(self, reader: redis.Redis) -> None:
        last_check = time.monotonic()
        while True:
            with self._lock:
                if self._stopping:
                    return
                joining, self._joining = self._joining, []
                leaving, self._leaving = self._leaving, []
                self._wake_pending = False
            for sub in leaving:
                self._remove(sub)
            for sub in joining:
                self._admit(reader, sub)
            streams: dict[Any, Any] = dict(self._cursors)
            streams[self._wake_key] = self._wake_cursor
            reply = cast("list[Any]", reader.xread(streams, count=PAGE, block=int(BLOCK_S * 1000)))
            for stream, entries in reply or []:
                if stream == self._wake_key:
                    self._wake_cursor = entries[-1][0]
                    continue
                self._deliver(stream, entries)
            if time.monotonic() - last_check >= BLOCK_S:
                last_check = time.monotonic()
                self._drop_expired(reader)

    def _admit(self, reader: redis.Redis, sub: Subscription) -> None:
        if sub.ended:
            return
        cursor = self._cursors.get(sub.stream)
        if cursor is None or id_key(sub.last_id) > id_key(cursor):
            # The joiner's id would become the shared read position, or is ahead of it:
            # it must be an id the stream has reached. One from the future (a cursor
            # checked before the stream was deleted and made anew, a caller that did
            # not check) would hold the read past every event to come, for everyone.
            tail = cast("list[Any]", reader.xrevrange(sub.stream, max="+", min="-", count=1))
            if not tail:
                sub.end("expired")
                return
            if id_key(sub.last_id) > id_key(tail[0][0]):
                sub.end("cursor")
                return
        if cursor is None:
            self._cursors[sub.stream] = sub.last_id
        elif id_key(sub.last_id) < id_key(cursor):
            # The hub is ahead of this joiner: hand it the stretch in between first.
            start = first_id_after(sub.last_id) or cursor
            entries = reader.xrange(sub.stream, min=start, max=cursor)
            sub.push(_decode(cast("list[Any]", entries)))
        self._subs.setdefault(sub.stream, set()).add(sub)

    def _deliver(self, stream: str, entries: list[Any]) -> None:
        self._cursors[stream] = entries[-1][0]
        events = _decode(entries)
        for sub in list(self._subs.get(stream, ())):
            sub.push(events)
            if sub.ended:
                self._remove(sub)

    def _remove(self, sub: Subscription) -> None:
        group = self._subs.get(sub.stream)
        if group is not None:
            group.discard(sub)
            if not group:
                del self._subs[sub.stream]
                self._cursors.pop(sub.stream, None)

    def _drop_expired(self, reader: redis.Redis) -> None:
        """End the subscriptions of runs whose keys expired or were deleted."""
        streams = list(self._subs)
        if not streams:
            return
        pipe = reader.pipeline(transaction=False)
        for stream in streams:
            pipe.exists(stream)
        for stream, exists in zip(streams, pipe.execute(), strict=True):
            if not exists:
                for sub in list(self._subs.get(stream, ())):
                    sub.end("expired")
                    self._remove(sub)

    def _drop_all(self, reason: str) -> None:
        with self._lock:
            subs = self._everyone()
            self._subs.clear()
            self._cursors.clear()
            self._joining = []
        for sub in subs:
            sub.end(reason)


def _trimmed_past(head: list[Any], cursor: str) -> bool:
    """Whether trimming dropped events after `cursor`: the stream lost its start and its
    first event kept (`head`, from `XRANGE - + COUNT 1`) is later than the cursor."""
    retained = retained_of(head, head)
    return bool(retained.trimmed and retained.first_id) and id_key(cursor) < id_key(
        str(retained.first_id)
    )


def _until_final(events: list[Event]) -> tuple[list[Event], bool]:
    """The events up to and including `run_finished`, and whether it was among them."""
    for i, event in enumerate(events):
        if event.is_final:
            return events[: i + 1], True
    return events, False


def _decode(entries: list[Any]) -> list[Event]:
    events = (Event.decode(entry_id, fields.get("data", "")) for entry_id, fields in entries)
    return [e for e in events if e is not None]
