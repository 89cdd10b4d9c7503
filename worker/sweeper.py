"""Lost-run takeover: attempts held by workers that stopped beating are resumed.

A lost prefork child's attempt is handed back by its node's main process at once
(`runner.StepRequest`), but nobody is left to do that for a whole lost node, and the
broker gives its messages back only after `STEPSTREAM_REDELIVER_S`. So every worker's
heartbeat thread also sweeps: one at a time (a short Redis lock), it walks the
unfinished runs and hands each attempt whose worker is no longer alive, or has been
restarted since (a new incarnation under the same name), to a new attempt
(`run_resumed`, reason `worker_lost`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import cast

from tasks import keys
from tasks.runner import dispatch
from tasks.store import TERMINAL_RUN, RunningAttempt, RunStore
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
        alive = {
            w["name"]: str(w["extra"].get("incarnation", ""))
            for w in registry.workers
            if w["status"] == "ok"
        }

        def lost(attempt: RunningAttempt) -> bool:
            if attempt.worker in alive:
                # Alive under that name, but restarted since it started the attempt?
                current = alive[attempt.worker]
                return bool(attempt.incarnation and current and current != attempt.incarnation)
            # A worker may start a task before its first heartbeat lands: an unknown
            # holder only counts as lost once its attempt is older than the grace.
            return now - attempt.started >= grace

        return take_over(self.store, "worker_lost", lost)


def take_over(store: RunStore, reason: str, select: Callable[[RunningAttempt], bool]) -> int:
    """Resume as new attempts the running attempts `select` picks; returns how many.

    Walks the unfinished runs, forgetting those found finished on the way.
    """
    taken = 0
    for run_id in store.active_runs():
        status, running = store.running_attempts(run_id)
        if status is None or status in TERMINAL_RUN:
            store.redis.srem(keys.active_runs(), run_id)
            continue
        for attempt in running:
            if not select(attempt):
                continue
            t = store.resume_step(
                run_id, attempt.step, attempt.attempt, reason, holder=attempt.worker
            )
            if t.outcome == "stale":
                continue
            log.warning(
                "run %s: step %s attempt %d held by %s taken over (%s): %s",
                run_id,
                attempt.step,
                attempt.attempt,
                attempt.worker,
                reason,
                t.outcome,
            )
            taken += 1
            dispatch(run_id, t.ready)
    return taken
