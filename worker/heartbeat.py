"""Worker heartbeats: each worker node records itself in `stepstream:workers`.

The heartbeat runs in the worker's main process, which sees every request it hands to
the pool (`celery.worker.state`), so its counts cover all of the node's children. Its
time is Redis' (stamped by the script that writes the row), so a worker whose clock is
off is judged by the same clock as everyone else. The sweeper has a thread of its own:
a long sweep never delays a heartbeat and makes its worker look dead.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import uuid
from typing import Any

from celery.signals import worker_init, worker_ready, worker_shutdown
from celery.worker import state

from tasks.config import Settings
from tasks.errors import BackendUnavailable
from tasks.eviction import check_eviction_policy
from tasks.runtime import get_runtime
from tasks.worker_rows import WorkerRows
from tasks.workers import INCARNATION_ENV, incarnation

from .sweeper import Sweeper

log = logging.getLogger(__name__)

#: The name a worker's heartbeat connection carries in CLIENT LIST.
WORKER_CLIENT_NAME = "stepstream-worker"


class Heartbeat:
    """Daemon threads that write this worker's row and sweep, every `heartbeat_s` seconds."""

    def __init__(self, hostname: str, settings: Settings, concurrency: int | None = None) -> None:
        self.hostname = hostname
        self.concurrency = concurrency
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
        active = {r.args[0] for r in list(state.active_requests) if r.args}
        return {
            "name": self.hostname,
            "pid": os.getpid(),
            "active_runs": len(active),
            "processed": sum(state.total_count.values()),
            "concurrency": self.concurrency,
            "started_at": self.started_at,
            "incarnation": incarnation(),
        }

    def beat(self) -> None:
        self.rows.beat(self.hostname, self.row())

    def _beat_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.beat()
            except BackendUnavailable as exc:
                log.warning("heartbeat failed: %s", exc.cause or exc)
            except Exception:
                log.exception("heartbeat failed")
            self._stop.wait(self.settings.heartbeat_s)

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


_current: Heartbeat | None = None


@worker_init.connect
def _new_incarnation(**_: Any) -> None:
    # Before the pool forks, so that every child records it with the steps it starts.
    os.environ[INCARNATION_ENV] = uuid.uuid4().hex


@worker_ready.connect
def _start(sender: Any, **_: Any) -> None:
    global _current
    pool = getattr(getattr(sender, "controller", None), "concurrency", None)
    settings = Settings.from_env()
    _current = Heartbeat(sender.hostname, settings, pool)
    _current.start()
    check_eviction_policy(settings.redis_url, f"worker {sender.hostname}")


@worker_shutdown.connect
def _stop(**_: Any) -> None:
    if _current is not None:
        _current.stop()
