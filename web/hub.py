"""One reader per web process: live events of every followed run, fanned out.

Each WebSocket or SSE subscriber first replays the run's history itself, in `XRANGE`
pages, and then joins the hub with the id of the last event it has. The hub's thread
holds one Redis connection and one blocking `XREAD` over every stream that has
subscribers, and copies what it reads into the subscribers' bounded queues. So the
Redis connections of a web process stay a handful however many people watch.

The seam between replay and live is handled in the hub's thread, where every delivery
of a stream happens, in order: a stream new to the hub is read from the joiner's last
id; a joiner behind the hub's cursor of that stream gets the missing stretch with an
`XRANGE` before anything newer; a joiner ahead skips what it already has. No gap and
no duplicate.

A subscriber that falls `QUEUE_LIMIT` events behind is dropped (it may resume with
`after`), so a slow one never holds up the others nor makes memory grow. When Redis is
unreachable, or the process is stopping, every subscriber is told to go.
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

from tasks import keys
from tasks.events import Event, first_id_after
from tasks.store import TERMINAL_RUN

log = logging.getLogger(__name__)

#: Events a subscriber may have waiting before it is dropped as too slow.
QUEUE_LIMIT = 10_000
#: Entries one XREAD or XRANGE page returns per stream.
PAGE = 1000
#: How long one blocking read waits; streams whose run expired are noticed this often.
BLOCK_S = 5.0


class Gone(Exception):
    """The subscription ended for a reason other than the run finishing."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        #: "slow" (fell too far behind), "unavailable" (Redis) or "shutdown".
        self.reason = reason


def id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


class Subscription:
    """One follower of one run: the hub fills it, the request handler drains it."""

    def __init__(self, run_id: str, last_id: str, limit: int) -> None:
        self.run_id = run_id
        self.stream = keys.run_events(run_id)
        #: The id of the last event handed to this subscriber (replay included).
        self.last_id = last_id
        self.limit = limit
        self._queue: collections.deque[Event] = collections.deque()
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
            if len(self._queue) + len(fresh) > self.limit:
                self._queue.clear()  # what it has not taken is dropped with it
                self._ended = "slow"
            else:
                self._queue.extend(fresh)
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
        client: redis.Redis,
        queue_limit: int = QUEUE_LIMIT,
        client_name: str | None = None,
    ) -> None:
        #: For replays, catch-ups and wake-ups: the process's pooled client.
        self.client = client
        self.redis_url = redis_url
        self.queue_limit = queue_limit
        self.client_name = client_name
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

    # -- for request handlers ----------------------------------------------------------

    def follow(self, run_id: str, after: str, wait_s: float) -> Iterator[list[Event]]:
        """Replay a run from `after`, then follow it live until `run_finished`.

        Yields events in batches as they come (a replay page, what arrived live) and an
        empty batch after each `wait_s` of silence (for keepalives); the last batch ends
        with `run_finished`. Raises Gone when the subscriber is dropped, and redis
        errors when replaying fails.
        """
        cursor = after if after not in ("", "0") else "0-0"
        while True:  # replay, page by page, on this request's own time
            start = first_id_after(cursor)
            if start is None:
                return
            pipe = self.client.pipeline(transaction=True)
            pipe.hget(keys.run(run_id), "status")
            pipe.xrange(keys.run_events(run_id), min=start, max="+", count=PAGE)
            status, entries = cast("tuple[str | None, list[Any]]", pipe.execute())
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
        sub = Subscription(run_id, last_id, self.queue_limit)
        with self._lock:
            if self._stopping:
                sub.end("shutdown")
                return sub
            self._joining.append(sub)
        # After joining: a reader that stopped for want of subscribers is started again.
        self._ensure_thread()
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
            pipe = self.client.pipeline(transaction=False)
            pipe.xadd(self._wake_key, {"w": "1"}, maxlen=16, approximate=False)
            pipe.expire(self._wake_key, 3600)
            pipe.execute()
        except redis.RedisError:
            pass  # the hub's own read fails too and ends everyone: nothing to wake

    def _run(self) -> None:
        reader = redis.Redis.from_url(
            self.redis_url,
            decode_responses=True,
            socket_timeout=BLOCK_S + 10,
            socket_connect_timeout=2,
            health_check_interval=0,
            client_name=self.client_name,
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
            for sub in leaving:
                self._remove(sub)
            for sub in joining:
                self._admit(sub)
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

    def _admit(self, sub: Subscription) -> None:
        if sub.ended:
            return
        cursor = self._cursors.get(sub.stream)
        if cursor is None:
            self._cursors[sub.stream] = sub.last_id
        elif id_key(sub.last_id) < id_key(cursor):
            # The hub is ahead of this joiner: hand it the stretch in between first.
            start = first_id_after(sub.last_id) or cursor
            entries = self.client.xrange(sub.stream, min=start, max=cursor)
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


def _until_final(events: list[Event]) -> tuple[list[Event], bool]:
    """The events up to and including `run_finished`, and whether it was among them."""
    for i, event in enumerate(events):
        if event.is_final:
            return events[: i + 1], True
    return events, False


def _decode(entries: list[Any]) -> list[Event]:
    events = (Event.decode(entry_id, fields.get("data", "")) for entry_id, fields in entries)
    return [e for e in events if e is not None]
