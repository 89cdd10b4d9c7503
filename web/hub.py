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
others nor makes memory grow (see subscription.py). When Redis is unreachable, or the
process is stopping, every subscriber is told to go. The hub's Redis reads are the
store's (`tasks/stream_reads.py`), on connections of the hub's own.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator

from tasks.errors import BackendUnavailable
from tasks.events import Event, Retained, first_id_after, id_key
from tasks.statuses import TERMINAL_RUN
from tasks.stream_reads import StreamReads

from .subscription import QUEUE_BYTES, QUEUE_LIMIT, Gone, Subscription

__all__ = ["HUB_CONNECTIONS", "QUEUE_BYTES", "QUEUE_LIMIT", "Gone", "Hub", "Subscription"]

log = logging.getLogger(__name__)

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
        self.side = StreamReads.connect(
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
        return self.side.retained(run_id)

    def follow(self, run_id: str, after: str, wait_s: float) -> Iterator[list[Event]]:
        """Replay a run from `after`, then follow it live until `run_finished`.

        Yields events in batches as they come (a replay page, what arrived live) and an
        empty batch after each `wait_s` of silence (for keepalives); the last batch ends
        with `run_finished`. Raises Gone when the subscriber is dropped, or when
        trimming dropped events it has not seen yet ("trimmed": never a silent gap),
        and BackendUnavailable when replaying fails.
        """
        cursor = after if after not in ("", "0") else "0-0"
        # From the beginning, the first event kept is where the reader starts; from a
        # cursor, every page must start right after what the reader has.
        check_gap = cursor != "0-0"
        while True:  # replay, page by page, on this request's own time
            start = first_id_after(cursor)
            if start is None:
                raise Gone("cursor")  # the largest id there is: nothing can follow it
            page = self.side.replay_page(run_id, start, PAGE)
            if check_gap and page.trimmed_past(cursor):
                raise Gone("trimmed")
            check_gap = True
            if page.last_id is None:
                if page.status is None or page.status in TERMINAL_RUN:
                    return  # finished (run_finished was replayed already) or expired
                break
            cursor = page.last_id
            events, final = _until_final(page.events)
            yield events
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
        self.side.close()

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
            self.side.wake(self._wake_key)
        except BackendUnavailable:
            # The joiner is then seen when the current read times out (BLOCK_S), or the
            # hub's own read fails too and ends everyone.
            with self._lock:
                self._wake_pending = False

    def _run(self) -> None:
        # Its read timeout outlasts the blocking read; no health check (it is never idle).
        reader = StreamReads.connect(
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
                except BackendUnavailable as exc:
                    log.warning(
                        "event hub: %s; dropping subscribers so they resume", exc.cause or exc
                    )
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

    def _loop(self, reader: StreamReads) -> None:
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
            cursors = {**self._cursors, self._wake_key: self._wake_cursor}
            for batch in reader.tail(cursors, PAGE, BLOCK_S):
                if batch.stream == self._wake_key:
                    self._wake_cursor = batch.last_id
                    continue
                self._deliver(batch.stream, batch.last_id, batch.events())
            if time.monotonic() - last_check >= BLOCK_S:
                last_check = time.monotonic()
                self._drop_expired(reader)

    def _admit(self, reader: StreamReads, sub: Subscription) -> None:
        if sub.ended:
            return
        cursor = self._cursors.get(sub.stream)
        if cursor is None or id_key(sub.last_id) > id_key(cursor):
            # The joiner's id would become the shared read position, or is ahead of it:
            # it must be an id the stream has reached. One from the future (a cursor
            # checked before the stream was deleted and made anew, a caller that did
            # not check) would hold the read past every event to come, for everyone.
            last_id = reader.last_id(sub.stream)
            if last_id is None:
                sub.end("expired")
                return
            if id_key(sub.last_id) > id_key(last_id):
                sub.end("cursor")
                return
        if cursor is None:
            self._cursors[sub.stream] = sub.last_id
        elif id_key(sub.last_id) < id_key(cursor):
            # The hub is ahead of this joiner: hand it the stretch in between first.
            start = first_id_after(sub.last_id) or cursor
            sub.push(reader.between(sub.stream, start, cursor))
        self._subs.setdefault(sub.stream, set()).add(sub)

    def _deliver(self, stream: str, last_id: str, events: list[Event]) -> None:
        self._cursors[stream] = last_id
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

    def _drop_expired(self, reader: StreamReads) -> None:
        """End the subscriptions of runs whose keys expired or were deleted."""
        streams = list(self._subs)
        if not streams:
            return
        for stream in reader.missing(streams):
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
