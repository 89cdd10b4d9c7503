"""One reader per web process: live events of every followed run, fanned out.

Each WebSocket or SSE subscriber first replays the run's history itself, in `XRANGE`
pages (the first read with the check of its cursor), and then joins the hub with the id
of the last event it has. The pages of every subscriber replaying at once are read many
to a round trip, one batch at a time (`BatchedPages`): a storm of reconnections queues
and replays in turn instead of crowding out the hub's live deliveries. The hub's thread
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
from tasks.events import TERMINAL_TYPE, WRITTEN_PREFIX, Event, Retained, first_id_after, id_key
from tasks.statuses import TERMINAL_RUN
from tasks.stream_reads import ReplayPage, StreamReads

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
#: Events of a run read with the check of a cursor, before a stream starts: most
#: followers of a live run need no other read before they join the hub.
FIRST_PAGE = 200
#: Entries asked for in one round trip by the replays of a process together: callers
#: queue and their pages are read many at a time, one batch after another (see
#: `BatchedPages`), so a storm of reconnections replays in turn, in bounded bites,
#: on one side connection, leaving the CPU to the hub's live deliveries in between.
PAGE_BUDGET = 2000
#: While replays queue, the next batch waits this long per entry the last one read: a
#: storm drains at most about 1 / PACE_S events a second, leaving the CPU (the
#: process's, and its clients') to live delivery; a lone replay is never paced.
REPLAY_PACE_S = 10e-6
#: The pause a replay takes, one at a time, before it hands on a page: under gevent a
#: timer, which fires only after the event loop has polled its sockets (the hub's read
#: among them), so replays go out one page per turn of the loop, not hundreds in a row.
REPLAY_TURN_S = 1e-6
#: After a read that brought events, the hub waits this long per stream it follows
#: (up to `GATHER_MAX_S`) before reading again: one XREAD names every followed stream,
#: and a thousand of them cost more to send and answer than the events they bring.
GATHER_PER_STREAM_S = 10e-6
GATHER_MAX_S = 0.01


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
            page_budget=PAGE_BUDGET,
            pace_s=REPLAY_PACE_S,
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
        #: Taken by a replay, for a turn of the event loop, before it hands on a page
        #: (see `follow`).
        self._replay_turn = threading.Lock()

    # -- for request handlers ----------------------------------------------------------

    def retained(self, run_id: str) -> tuple[bool, Retained]:
        """Whether the run exists, and the ends of its stream (for checking a cursor)."""
        return self.side.retained(run_id)

    def open(self, run_id: str, after: str) -> ReplayPage:
        """Whether the run exists and the ends of its stream (for checking a cursor),
        read with the first events after `after`: hand it to `follow`, which starts
        with them."""
        start = first_id_after(_cursor(after))
        return self.side.replay_page(run_id, start, FIRST_PAGE if start else 0)

    def follow(
        self, run_id: str, after: str, wait_s: float, first: ReplayPage | None = None
    ) -> Iterator[list[Event]]:
        """Replay a run from `after`, then follow it live until `run_finished`; `first`
        is what `open` read (else the first page is read here).

        Yields events in batches as they come (a replay page, what arrived live) and an
        empty batch after each `wait_s` of silence (for keepalives); the last batch ends
        with `run_finished`. Raises Gone when the subscriber is dropped, or when
        trimming dropped events it has not seen yet ("trimmed": never a silent gap),
        and BackendUnavailable when replaying fails.
        """
        cursor = _cursor(after)
        # From the beginning, the first event kept is where the reader starts; from a
        # cursor, every page must start right after what the reader has.
        check_gap = cursor != "0-0"
        while True:  # replay, page by page, on this request's own time
            start = first_id_after(cursor)
            if start is None:
                raise Gone("cursor")  # the largest id there is: nothing can follow it
            if first is not None:
                page, first = first, None
            else:
                page = self.side.replay_page(run_id, start, PAGE)
            if check_gap and page.trimmed_past(cursor):
                raise Gone("trimmed")
            check_gap = True
            if page.last_id is None:
                if page.status is None or page.status in TERMINAL_RUN:
                    return  # finished (run_finished was replayed already) or expired
                break
            cursor, more = page.last_id, page.full
            with self._replay_turn:
                # One page a turn of the event loop: under gevent a storm of replays,
                # each formatting and writing hundreds of events, would otherwise run
                # back to back, ahead of the hub's next read and the deliveries it wakes.
                time.sleep(REPLAY_TURN_S)
            events, final = _until_final(page.events)
            # Nothing read is held while the next read waits its turn behind a storm of
            # joiners (nor for the life of the subscription, after the last page): a
            # thousand such frames would keep hundreds of thousands of events alive
            # for the cyclic collector to walk, in pauses of tens of milliseconds.
            del page
            yield events
            del events
            if final:
                return
            if not more:
                break  # it read what the stream held: the hub hands over the rest
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
            self._admit(reader, joining)
            cursors = {**self._cursors, self._wake_key: self._wake_cursor}
            delivered = False
            for batch in reader.tail(cursors, PAGE, BLOCK_S):
                if batch.stream == self._wake_key:
                    self._wake_cursor = batch.last_id
                    continue
                self._deliver(batch.stream, batch.last_id, batch.events())
                delivered = True
            if delivered:
                # Let events gather (and the subscribers just woken send theirs) so the
                # next read brings more of them for what it costs.
                time.sleep(min(GATHER_MAX_S, GATHER_PER_STREAM_S * len(cursors)))
            if time.monotonic() - last_check >= BLOCK_S:
                last_check = time.monotonic()
                self._drop_expired(reader)

    def _admit(self, reader: StreamReads, joining: list[Subscription]) -> None:
        """Everyone who joined since the last read, at once: two round trips at most
        however many join, so that a storm of reconnections never holds up the reads
        of the subscribers already following."""
        joining = [sub for sub in joining if not sub.ended]
        # An id that would become the shared read position, or is ahead of it, must be
        # one the stream has reached. One from the future (a cursor checked before the
        # stream was deleted and made anew, a caller that did not check) would hold the
        # read past every event to come, for everyone.
        unchecked = sorted({sub.stream for sub in joining if self._ahead(sub)})
        lasts = reader.last_ids(unchecked) if unchecked else {}
        admitted: dict[str, list[Subscription]] = {}
        for sub in joining:
            if sub.stream in lasts:
                last_id = lasts[sub.stream]
                if last_id is None:
                    sub.end("expired")
                    continue
                if id_key(sub.last_id) > id_key(last_id):
                    sub.end("cursor")
                    continue
            admitted.setdefault(sub.stream, []).append(sub)
        # The hub reads a stream new to it from its earliest joiner's id; joiners behind
        # the hub get the stretch in between first, read once for all of them (each
        # subscription skips what it has).
        spans: dict[str, tuple[str, str]] = {}
        for stream, subs in admitted.items():
            earliest = min((sub.last_id for sub in subs), key=id_key)
            cursor = self._cursors.get(stream)
            if cursor is None:
                self._cursors[stream] = earliest
            elif id_key(earliest) < id_key(cursor):
                spans[stream] = (first_id_after(earliest) or cursor, cursor)
        stretches = reader.stretches(spans) if spans else {}
        for stream, subs in admitted.items():
            group = self._subs.setdefault(stream, set())
            for sub in subs:
                if stream in stretches:
                    sub.push(stretches[stream])
                if not sub.ended:
                    group.add(sub)
            if not group:
                del self._subs[stream]
                self._cursors.pop(stream, None)

    def _ahead(self, sub: Subscription) -> bool:
        """Whether a joiner's id would become its stream's read position, or is ahead."""
        cursor = self._cursors.get(sub.stream)
        return cursor is None or id_key(sub.last_id) > id_key(cursor)

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


def _cursor(after: str) -> str:
    return after if after not in ("", "0") else "0-0"


#: How `run_finished` begins when the run scripts wrote it.
_FINAL_WRITTEN = f'{WRITTEN_PREFIX}{TERMINAL_TYPE}"'


def _until_final(events: list[Event]) -> tuple[list[Event], bool]:
    """The events up to and including `run_finished`, and whether it was among them."""
    for i, event in enumerate(events):
        # Every event of a replay passes here: what the scripts wrote is told by its
        # first bytes (as `Event.type` reads it, without slicing the type out).
        raw = event.raw
        if raw.startswith(_FINAL_WRITTEN) or (
            not raw.startswith(WRITTEN_PREFIX) and event.is_final
        ):
            return events[: i + 1], True
    return events, False
