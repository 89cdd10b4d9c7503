"""The all-runs stream `stepstream:events`, fed from a background thread.

SPEC makes this stream best effort: it is for dashboards, the per-run streams are the
record. So it stays off the path of a step: events are queued here and appended in
pipelined batches by a daemon thread. When the queue is full, or Redis refuses, events
are dropped (and counted) rather than slowing a run; the few still queued when a
process exits are lost.
"""

from __future__ import annotations

import logging
import os
import queue
import threading

import redis

from . import keys
from .events import Event
from .redis_client import UNAVAILABLE

log = logging.getLogger(__name__)

#: Events held for the feed before new ones are dropped.
QUEUE_SIZE = 10_000
#: Events appended per pipeline.
BATCH = 500


class AllEventsFeed:
    """Copies events to the all-runs stream; one thread per process, started on demand."""

    def __init__(self, client: redis.Redis, maxlen: int) -> None:
        self.client = client
        self.maxlen = maxlen
        #: Events given up on (queue full or Redis error), for metrics and tests.
        self.dropped = 0
        self._pid = -1
        self._queue: queue.Queue[Event] = queue.Queue(QUEUE_SIZE)
        self._lock = threading.Lock()

    def put(self, events: list[Event]) -> None:
        if not events:
            return
        self._ensure_thread()
        for event in events:
            try:
                self._queue.put_nowait(event)
            except queue.Full:
                self.dropped += 1

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything queued so far was handled; False on timeout."""
        done = threading.Event()

        def waiter() -> None:
            self._queue.join()
            done.set()

        threading.Thread(target=waiter, daemon=True).start()
        return done.wait(timeout)

    def _ensure_thread(self) -> None:
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid == os.getpid():
                return
            # A forked child inherits the queue but not the thread: start afresh.
            self._queue = queue.Queue(QUEUE_SIZE)
            threading.Thread(target=self._run, name="stepstream-feed", daemon=True).start()
            self._pid = os.getpid()

    def _run(self) -> None:
        q = self._queue
        while True:
            batch = [q.get()]
            while len(batch) < BATCH:
                try:
                    batch.append(q.get_nowait())
                except queue.Empty:
                    break
            try:
                pipe = self.client.pipeline(transaction=False)
                for event in batch:
                    pipe.xadd(
                        keys.all_events(),
                        {"data": event.encode()},
                        maxlen=self.maxlen,
                        approximate=True,
                    )
                pipe.execute()
            except UNAVAILABLE as exc:
                self.dropped += len(batch)
                log.warning("all-runs stream: dropped %d events: %s", len(batch), exc)
            finally:
                for _ in batch:
                    q.task_done()
