"""Lost-run takeover and the backstops that make every attempt end.

A lost prefork child's attempt is handed back by its node's main process at once
(`steps.StepRequest`), but nobody is left to do that for a whole lost node, and the
broker gives its messages back only after `STEPSTREAM_REDELIVER_S`. So a sweeper thread
in every worker runs, one at a time across the cluster (a short Redis lock), over the
watch indexes (`tasks/watch.py`), never over every run:

- an attempt whose worker is no longer alive, or has been restarted since (a new
  incarnation under the same name), is handed to a new attempt (`run_resumed`, reason
  `worker_lost`);
- an attempt still recorded as running past its deadline (time limit, hard-limit grace,
  `STEPSTREAM_ATTEMPT_GRACE_S`) is recorded failed, whatever its worker's health: the
  last line of defence behind the task's own error handling;
- a dispatch owed for `STEPSTREAM_REDELIVER_S` (a ready step nobody started: its
  message was never sent, or lost; a new run's roots, should the web have died between
  recording the run and sending them; the start of a queued run created by an earlier
  version) is sent again; starting is fenced, so a copy is harmless;
- a run whose step state vanished from Redis is failed (`state_lost`).

Every age is measured on Redis' clock, never by comparing two hosts' clocks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from tasks.statuses import Reason, ScriptOutcome, StepStatus, Verdict
from tasks.store import ReadyStep, RunStore
from tasks.watch import RunningAttempt
from tasks.workers import STALE_AFTER_INTERVALS, read_registry

from .steps import dispatch, finish, send_run

log = logging.getLogger(__name__)

#: Owed dispatches sent again per sweep: a backlog is worked off over a few sweeps.
DISPATCH_BATCH = 500


class Sweeper:
    def __init__(self, store: RunStore, hostname: str) -> None:
        self.store = store
        self.hostname = hostname
        self.reindexed = False

    def sweep(self) -> int:
        """One pass; returns how many attempts and dispatches it acted on."""
        settings = self.store.settings
        hold_ms = max(1, int(settings.heartbeat_s * 1000 * 0.9))
        if not self.store.take_sweeper_lock(self.hostname, hold_ms):
            return 0  # another worker swept moments ago
        if not self.reindexed:
            # Runs of an earlier version join the indexes before anything relies on them.
            reindexed = self.store.reindex()
            if reindexed:
                log.warning("put %d runs of an earlier version into the indexes", reindexed)
            self.reindexed = True
        # And so do those that nodes of that version start during a rolling upgrade.
        self.store.reindex_legacy()
        # The rows and the time to judge them by, both Redis': hosts' clocks may differ.
        rows, now = self.store.workers.read()
        grace = STALE_AFTER_INTERVALS * settings.heartbeat_s
        registry = read_registry(rows, now=now, heartbeat_s=settings.heartbeat_s)
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

        attempts = self.store.running_attempts()
        acted = take_over(self.store, Reason.WORKER_LOST, lost, attempts)
        acted += self.end_overdue([a for a in attempts if a.deadline <= now and not lost(a)])
        acted += self.send_owed(now)
        return acted

    def end_overdue(self, attempts: list[RunningAttempt]) -> int:
        """Record as failed the attempts still running past their deadline."""
        ended = 0
        for a in attempts:
            check = self.store.sweep_check(a.run_id, "running", a.entry, a.step, a.attempt)
            if check.verdict == Verdict.STATE_LOST:
                log.error("run %s failed: its step state is missing from Redis", a.run_id)
            if check.verdict != Verdict.OVERDUE:
                continue
            message = (
                f"did not end within its time limit ({check.timeout_s:g} s) and grace; "
                f"recorded failed by the sweeper (worker {a.worker})"
            )
            log.warning("run %s: step %s attempt %d %s", a.run_id, a.step, a.attempt, message)
            finish(
                self.store,
                a.run_id,
                a.step,
                a.attempt,
                StepStatus.FAILED,
                message,
                "",
                reason=Reason.TIMEOUT,
            )
            ended += 1
        return ended

    def send_owed(self, now: float) -> int:
        """Send again what was owed for a redelivery time and never started."""
        sent = 0
        for owed in self.store.owed_dispatches(now, DISPATCH_BATCH):
            check = self.store.sweep_check(owed.run_id, "dispatch", owed.entry, owed.step)
            if check.verdict == Verdict.STATE_LOST:
                log.error("run %s failed: its step state is missing from Redis", owed.run_id)
            elif check.verdict == Verdict.SEND_RUN:
                log.warning("run %s: still queued, sending its start again", owed.run_id)
                send_run(owed.run_id)
                sent += 1
            elif check.verdict == Verdict.SEND_STEP:
                log.warning(
                    "run %s: step %s attempt %d ready but never started, sending it again",
                    owed.run_id,
                    owed.step,
                    check.attempt,
                )
                dispatch(owed.run_id, [ReadyStep(owed.step, check.attempt, check.timeout_s, 0)])
                sent += 1
        return sent


def take_over(
    store: RunStore,
    reason: str,
    select: Callable[[RunningAttempt], bool],
    attempts: list[RunningAttempt] | None = None,
) -> int:
    """Resume as new attempts the running attempts `select` picks; returns how many."""
    taken = 0
    for attempt in store.running_attempts() if attempts is None else attempts:
        if not select(attempt):
            continue
        t = store.resume_step(
            attempt.run_id, attempt.step, attempt.attempt, reason, holder=attempt.worker
        )
        if t.outcome == ScriptOutcome.STALE:
            # Not running as indexed: the entry is dropped, and a run whose step state
            # vanished meanwhile is failed, rather than looked at again every sweep.
            check = store.sweep_check(
                attempt.run_id, "running", attempt.entry, attempt.step, attempt.attempt
            )
            if check.verdict == Verdict.STATE_LOST:
                log.error("run %s failed: its step state is missing from Redis", attempt.run_id)
            continue
        log.warning(
            "run %s: step %s attempt %d held by %s taken over (%s): %s",
            attempt.run_id,
            attempt.step,
            attempt.attempt,
            attempt.worker,
            reason,
            t.outcome,
        )
        taken += 1
        dispatch(attempt.run_id, t.ready)
    return taken
