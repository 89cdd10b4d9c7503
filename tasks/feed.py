"""The web's copies of new runs' `run_queued` to the all-runs stream `stepstream:events`.

Every other event is copied there by the script that appends it (`lua/prelude.lua`); a
new run's is copied only once the web has sent the run's roots, so that a run undone
because the broker refused them never shows up there. SPEC makes this stream best
effort (the per-run streams are the record), so these copies stay off the request's
path: they are queued here and appended in batches by a daemon thread. When the queue
is full, or Redis refuses, they are dropped (and counted) rather than slowing a request;
the few still queued when a process exits are lost.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque

import redis

from . import keys
from .events import Event
from .redis_client import UNAVAILABLE

log = logging.getLogger(__name__)

#: Events held for the feed before new ones are dropped.
QUEUE_SIZE = 10_000
#: Events appended per call.
BATCH = 500

#: Many XADDs in one call: a pipeline of single XADDs costs the client more per event
#: than the step that wrote them.
APPEND_ALL = """
for i = 2, #ARGV do
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'data', ARGV[i])
end
"""


class AllEventsFeed:
    """Copies events to the all-runs stream; one thread per process, started on demand."""

    def __init__(self, client: redis.Redis, maxlen: int) -> None:
        self.client = client
        self.maxlen = maxlen
        #: Events given up on (queue full or Redis error), for metrics and tests.
        self.dropped = 0
        self._append_all = client.register_script(APPEND_ALL)
        self._pid = -1
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self._pending: deque[Event] = deque()
        self._changed = threading.Condition()
        #: Events taken in and events handled (appended or dropped), for `flush`.
        self._queued = self._handled = 0

    def put(self, events: list[Event]) -> None:
        if not events:
            return
        self._ensure_thread()
        with self._changed:
            room = max(0, QUEUE_SIZE - len(self._pending))
            if room < len(events):
                self.dropped += len(events) - room
                events = events[:room]
            self._pending.extend(events)
            self._queued += len(events)
            self._changed.notify_all()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything queued so far was handled; False on timeout."""
        with self._changed:
            target = self._queued
            return self._changed.wait_for(lambda: self._handled >= target, timeout)

    def _ensure_thread(self) -> None:
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid == os.getpid():
                return
            # A forked child inherits the queue but not the thread: start afresh.
            self._reset()
            threading.Thread(target=self._run, name="stepstream-feed", daemon=True).start()
            self._pid = os.getpid()

    def _run(self) -> None:
        pending, changed = self._pending, self._changed
        while True:
            with changed:
                changed.wait_for(lambda: bool(pending))
                batch = [pending.popleft() for _ in range(min(BATCH, len(pending)))]
            try:
                self._append_all(
                    keys=[keys.all_events()], args=[self.maxlen, *(e.encode() for e in batch)]
                )
            except UNAVAILABLE as exc:
                self.dropped += len(batch)
                log.warning("all-runs stream: dropped %d events: %s", len(batch), exc)
            finally:
                with changed:
                    self._handled += len(batch)
                    changed.notify_all()
