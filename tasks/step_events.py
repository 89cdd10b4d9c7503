"""A step attempt's progress and log events, appended in order by a background thread.

`ctx.progress()` and `ctx.log()` only queue the event and return, so a chatty tool is not
slowed by a Redis round trip per call. The thread writes whatever is queued in one
call of `step_event.lua`: one event alone at once when the step is quiet, hundreds per
round trip when it is busy. Events are numbered as they are queued, so their order is
the calls' order, and a batch retried after a lost reply is not appended twice. Past
`MAX_PENDING` queued events the tool waits: memory stays bounded and nothing is dropped.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from .store import RunStore

#: Events written per call of the script.
MAX_BATCH = 1000
#: Events queued before `put` waits for the writer.
MAX_PENDING = 20_000

Item = tuple[str, Mapping[str, Any], float | None, int]


class EventWriter:
    def __init__(self, store: RunStore, run_id: str, step: str, attempt: int) -> None:
        self.store = store
        self.run_id = run_id
        self.step = step
        self.attempt = attempt
        self._pending: list[Item] = []
        # On a plain lock: under gevent, an RLock is pure Python and costs a chatty tool
        # more per call than everything else `put` does.
        self._ready = threading.Condition(threading.Lock())
        self._writing = False
        self._closed = False
        self._error: BaseException | None = None
        self._count = 0
        self._thread: threading.Thread | None = None

    def put(
        self, event_type: str, fields: Mapping[str, Any], progress: float | None = None
    ) -> None:
        """Queue one event; raises what writing an earlier batch raised."""
        with self._ready:
            if len(self._pending) >= MAX_PENDING:
                self._ready.wait_for(
                    lambda: len(self._pending) < MAX_PENDING or self._error is not None
                )
            if self._error is not None:
                raise self._error
            self._count += 1
            self._pending.append((event_type, fields, progress, self._count))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._write, name="stepstream-events", daemon=True
                )
                self._thread.start()
            elif len(self._pending) == 1 and not self._writing:
                self._ready.notify_all()  # the writer is idle, waiting for this one

    def close(self) -> None:
        """Write everything queued, then stop; raises what writing raised."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()
            self._ready.wait_for(
                lambda: (not self._pending and not self._writing) or self._error is not None
            )
            if self._error is not None:
                raise self._error

    def _write(self) -> None:
        while True:
            with self._ready:
                self._ready.wait_for(lambda: bool(self._pending) or self._closed)
                if not self._pending:
                    return
                batch = self._pending[:MAX_BATCH]
                del self._pending[:MAX_BATCH]
                self._writing = True
                self._ready.notify_all()  # room for producers waiting on MAX_PENDING
            try:
                self.store.step_events(self.run_id, self.step, self.attempt, batch)
            except BaseException as exc:  # handed to the tool's next call, or to close()
                with self._ready:
                    self._error = exc
                    self._writing = False
                    self._ready.notify_all()
                return
            with self._ready:
                self._writing = False
                self._ready.notify_all()
