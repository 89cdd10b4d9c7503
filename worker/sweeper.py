"""Lost-run takeover: attempts held by workers that stopped beating are resumed.

Celery redelivers the message of a lost prefork child at once (and `run_step` resumes
it), but the messages of a whole lost node come back only after the broker's visibility
timeout, an hour by default. So every worker's heartbeat thread also sweeps: one at a
time (a short Redis lock), it walks the unfinished runs and hands each attempt whose
worker is no longer alive to a new attempt (`run_resumed`, reason `worker_lost`).
"""

from __future__ import annotations

import logging
import time
from typing import cast

from tasks import keys
from tasks.runner import dispatch
from tasks.store import TERMINAL_RUN, RunStore
from tasks.workers import STALE_AFTER_INTERVALS, read_registry

log = logging.getLogger(__name__)


class Sweeper:
    def __init__(self, store: RunStore, hostname: str) -> None:
        self.store = store
        self.hostname = hostname

    def sweep(self) -> int:
        """Resume what lost workers held; returns how many attempts were taken over."""
        settings = self.store.settings
        client = self.store.redis
        hold_ms = max(1, int(settings.heartbeat_s * 1000 * 0.9))
        if not client.set(keys.sweeper_lock(), self.hostname, nx=True, px=hold_ms):
            return 0  # another worker swept moments ago
        now = time.time()
        grace = STALE_AFTER_INTERVALS * settings.heartbeat_s
        registry = read_registry(
            cast("dict[str, str]", client.hgetall(keys.workers())),
            now=now,
            heartbeat_s=settings.heartbeat_s,
        )
        alive = {w["name"] for w in registry.workers if w["status"] == "ok"}
        resumed = 0
        for run_id in self.store.active_runs():
            status, running = self.store.running_attempts(run_id)
            if status is None or status in TERMINAL_RUN:
                client.srem(keys.active_runs(), run_id)
                continue
            for attempt in running:
                # A worker may start a task before its first heartbeat lands: an unknown
                # holder only counts as lost once its attempt is older than the grace.
                if attempt.worker in alive or now - attempt.started < grace:
                    continue
                t = self.store.resume_step(
                    run_id,
                    attempt.step,
                    attempt.attempt,
                    "worker_lost",
                    holder=attempt.worker,
                )
                if t.outcome == "stale":
                    continue
                log.warning(
                    "run %s: step %s attempt %d held by lost worker %s: %s",
                    run_id,
                    attempt.step,
                    attempt.attempt,
                    attempt.worker,
                    t.outcome,
                )
                resumed += 1
                dispatch(run_id, t.ready)
        return resumed
