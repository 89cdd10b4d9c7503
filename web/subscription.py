"""One follower of one run, as the hub (hub.py) fills it and a request drains it.

Its queue is bounded by count and by bytes: a subscriber with more than `QUEUE_LIMIT`
events, or `QUEUE_BYTES` bytes of them, waiting is dropped (it may resume with
`after`), so a slow one never holds up the others nor makes memory grow.
"""

from __future__ import annotations

import collections
import threading

from tasks import keys
from tasks.events import Event, id_key

#: Events a subscriber may have waiting before it is dropped as too slow.
QUEUE_LIMIT = 10_000
#: Bytes of event JSON a subscriber may have waiting before it is dropped as too slow.
QUEUE_BYTES = 16 * 1024 * 1024


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
        # A lock for the queue and a flag for its reader, not a Condition: under gevent
        # the flag is gevent's own Event, and waking ten thousand readers a second must
        # cost little.
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._ended: str | None = None

    def push(self, events: list[Event]) -> None:
        """Called by the hub's thread: never blocks."""
        if not events:
            return
        with self._lock:
            if self._ended:
                return
            last = id_key(self.last_id)
            if id_key(events[0].id) > last:
                fresh = events  # the usual case: all of it is new
            else:
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
            self._ready.set()

    def end(self, reason: str) -> None:
        with self._lock:
            if not self._ended:
                self._ended = reason
            self._ready.set()

    def take(self, timeout: float) -> list[Event]:
        """What arrived, waiting up to `timeout`; raises Gone when dropped."""
        if not self._ready.is_set():  # under load it is: no timer to arm
            self._ready.wait(timeout)
        with self._lock:
            if self._queue:
                batch = list(self._queue)
                self._queue.clear()
                self._bytes = 0
                if self._ended is None:
                    self._ready.clear()
                return batch
            if self._ended is not None:
                raise Gone(self._ended)
            self._ready.clear()
            return []

    @property
    def ended(self) -> str | None:
        return self._ended
