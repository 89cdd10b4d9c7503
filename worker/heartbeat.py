"""Worker heartbeats: each worker node records itself in `stepstream:workers`.

The heartbeat runs in the worker's main process, which sees every request it hands to
the pool (`celery.worker.state`), so its counts cover all of the node's children. Its
time is Redis' (stamped by the script that writes the row), so a worker whose clock is
off is judged by the same clock as everyone else. The sweeper has a thread of its own:
a long sweep never delays a heartbeat and makes its worker look dead.

A row also says what the worker is doing: the queues it consumes, its slots and how
many are busy, the step attempts it runs (SPEC §8, §13.1). So that a run's page can
tell promptly why it waits, a worker beats again as soon as its tasks change (at most
every `MIN_BEAT_GAP_S`), not only every interval. And it reports on its Python tools:
they are loaded once, in the main process before the pool forks (so every child runs
the code fingerprinted), and compared with the disk at each interval (see
`tasks.tools.fingerprints`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from celery.signals import worker_init, worker_ready, worker_shutdown
from celery.worker import state

from tasks.config import Settings
from tasks.errors import BackendUnavailable
from tasks.eviction import check_eviction_policy
from tasks.runtime import get_runtime
from tasks.task_names import RUN_STEP
from tasks.tools import default_registry
from tasks.tools.fingerprints import LoadedTools
from tasks.worker_rows import WorkerRows
from tasks.workers import INCARNATION_ENV, incarnation

from .sweeper import Sweeper

log = logging.getLogger(__name__)

#: The name a worker's heartbeat connection carries in CLIENT LIST.
WORKER_CLIENT_NAME = "stepstream-worker"
#: At most this many of the attempts a worker runs are listed in its row (the oldest).
CURRENT_STEPS_CAP = 20
#: How often the heartbeat thread looks whether the node's tasks changed.
ACTIVITY_POLL_S = 0.1
#: The least time between two beats, however often the node's tasks change.
MIN_BEAT_GAP_S = 0.5


class Heartbeat:
    """Daemon threads that write this worker's row and sweep, every `heartbeat_s` seconds."""

    def __init__(
        self,
        hostname: str,
        settings: Settings,
        concurrency: int | None = None,
        queues: Callable[[], list[str] | None] = lambda: None,
        tools: LoadedTools | None = None,
    ) -> None:
        self.hostname = hostname
        self.concurrency = concurrency
        #: The names of the queues the node consumes now (they may change at run time).
        self.queues = queues
        self.tools = tools
        self._tools_report: dict[str, Any] | None = None
        self._tools_checked = float("-inf")
        self.started_at = time.time()
        self.settings = settings
        #: The registry, on a client of the heartbeat's own: a beat never queues behind
        #: the node's steps.
        self.rows = WorkerRows.connect(settings.redis_url, WORKER_CLIENT_NAME)
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._beat_loop, name="stepstream-heartbeat", daemon=True),
            threading.Thread(target=self._sweep_loop, name="stepstream-sweeper", daemon=True),
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        with contextlib.suppress(BackendUnavailable):
            self.rows.remove(self.hostname)

    def row(self) -> dict[str, Any]:
        requests = list(state.active_requests)
        active = {r.args[0] for r in requests if r.args}
        row = {
            "name": self.hostname,
            "pid": os.getpid(),
            "active_runs": len(active),
            "processed": sum(state.total_count.values()),
            "concurrency": self.concurrency,
            "started_at": self.started_at,
            "incarnation": incarnation(),
            "queues": self.queues(),
            "busy": len(requests),
            "current_steps": current_steps(requests),
        }
        tools = self._tools()
        if tools is not None:
            row["tools"] = tools
        return row

    def _tools(self) -> dict[str, Any] | None:
        """The tools report, taken again once an interval (beats between reuse it)."""
        if self.tools is None:
            return None
        now = time.monotonic()
        if self._tools_report is None or now - self._tools_checked >= self.settings.heartbeat_s:
            self._tools_report = self.tools.report()
            self._tools_checked = now
        return self._tools_report

    def beat(self) -> None:
        self.rows.beat(self.hostname, self.row())

    def _beat_loop(self) -> None:
        while not self._stop.is_set():
            beat_at = time.monotonic()
            seen = _activity()
            try:
                self.beat()
            except BackendUnavailable as exc:
                log.warning("heartbeat failed: %s", exc.cause or exc)
            except Exception:
                log.exception("heartbeat failed")
            self._until_next_beat(beat_at, seen)

    def _until_next_beat(self, beat_at: float, seen: frozenset[str]) -> None:
        """Wait for the interval to pass, or for the node's tasks to change (but no less
        than `MIN_BEAT_GAP_S` after the last beat)."""
        due = beat_at + self.settings.heartbeat_s
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= due:
                return
            if now - beat_at >= MIN_BEAT_GAP_S and _activity() != seen:
                return
            self._stop.wait(min(ACTIVITY_POLL_S, due - now))

    def _sweep_loop(self) -> None:
        sweeper = Sweeper(get_runtime().store, self.hostname)
        while not self._stop.is_set():
            try:
                sweeper.sweep()
            except BackendUnavailable as exc:
                log.warning("sweeping for lost runs failed: %s", exc.cause or exc)
            except Exception:
                log.exception("sweeping for lost runs failed")
            self._stop.wait(self.settings.heartbeat_s)


def _activity() -> frozenset[str]:
    """The ids of the tasks the node runs now: a change is worth a beat."""
    return frozenset(str(r.id) for r in list(state.active_requests))


def current_steps(requests: list[Any]) -> list[dict[str, Any]]:
    """The step attempts among `requests`, oldest first, at most `CURRENT_STEPS_CAP`;
    `started_at` is when the pool took it (this host's clock, for readers of an earlier
    version) and `running_s` how long ago: a difference of this host's clock, which the
    registry puts on Redis' clock (`tasks.workers`), since this host's may be off."""
    now = time.time()
    steps = []
    for request in requests:
        args: tuple[Any, ...] = tuple(request.args or ())
        if request.name != RUN_STEP or len(args) < 3:
            continue
        started = request.time_start
        steps.append(
            {
                "run_id": str(args[0]),
                "step": str(args[1]),
                "attempt": args[2],
                "started_at": (
                    datetime.fromtimestamp(started, UTC).isoformat() if started else None
                ),
                "running_s": round(max(0.0, now - started), 3) if started else None,
            }
        )
    steps.sort(key=lambda s: (s["started_at"] or "~", s["run_id"], s["step"]))
    return steps[:CURRENT_STEPS_CAP]


def consumed_queues(consumer: Any) -> list[str] | None:
    """The queues a Celery consumer takes messages from now (`-Q`, and any added or
    cancelled since by remote control); None if it cannot tell."""
    try:
        return sorted(str(q) for q in consumer.app.amqp.queues.consume_from)
    except Exception:  # a dict changing under us, or a Celery without it
        return None


_current: Heartbeat | None = None
#: The Python tools as the main process loaded them, before the pool forked.
_tools: LoadedTools | None = None


@worker_init.connect
def _new_incarnation(**_: Any) -> None:
    # Before the pool forks, so that every child records it with the steps it starts.
    os.environ[INCARNATION_ENV] = uuid.uuid4().hex


@worker_init.connect
def _load_tools(**_: Any) -> None:
    # Before the pool forks too: the children inherit these modules rather than import
    # them when they first run a step, maybe after a file changed, so what a worker runs
    # is what its row fingerprints.
    global _tools
    try:
        _tools = LoadedTools(default_registry())
    except Exception:
        log.exception("could not fingerprint the tools: their changes on disk go unreported")


@worker_ready.connect
def _start(sender: Any, **_: Any) -> None:
    global _current
    pool = getattr(getattr(sender, "controller", None), "concurrency", None)
    settings = Settings.from_env()
    _current = Heartbeat(
        sender.hostname, settings, pool, queues=lambda: consumed_queues(sender), tools=_tools
    )
    _current.start()
    check_eviction_policy(settings.redis_url, f"worker {sender.hostname}")


@worker_shutdown.connect
def _stop(**_: Any) -> None:
    if _current is not None:
        _current.stop()
