"""The Celery tasks: `stepstream.run_scenario` starts a run, `stepstream.run_step` runs
one step attempt and dispatches whatever its completion made ready, and
`stepstream.enforce_cancel` ends a cancelled run whose steps outlived the grace.

No task waits for another: each step is its own message, and the script that records
a step's end decides, atomically, which steps are ready next (or when to retry). Every
message names its attempt and the scripts fence on it, so a redelivered or duplicated
message does nothing but complete a dispatch that a crash may have interrupted.
"""

from __future__ import annotations

import logging
from typing import Any

from billiard.einfo import ExceptionInfo
from celery import Task, shared_task
from celery.exceptions import TimeLimitExceeded

from .engine import StepContext, execute, timed_out_message
from .runtime import get_runtime
from .store import ReadyStep

log = logging.getLogger(__name__)

RUN_SCENARIO = "stepstream.run_scenario"
RUN_STEP = "stepstream.run_step"
ENFORCE_CANCEL = "stepstream.enforce_cancel"

#: Extra seconds past a step's soft time limit before its process is killed.
HARD_LIMIT_GRACE_S = 10


def dispatch(run_id: str, ready: list[ReadyStep]) -> None:
    """Send a `run_step` message for each ready step; a fan-out goes in batches."""
    if not ready:
        return
    # One pipelined round trip per batch rather than one per message: a step that fans
    # out to a thousand others sends them in a handful of writes.
    with run_step.app.producer_or_acquire() as producer, producer.batch():
        for item in ready:
            run_step.apply_async(
                args=(run_id, item.step, item.attempt),
                countdown=item.delay_s or None,
                soft_time_limit=item.timeout_s,
                time_limit=item.timeout_s + HARD_LIMIT_GRACE_S,
                producer=producer,
            )


@shared_task(name=RUN_SCENARIO, bind=True, ignore_result=True)
def run_scenario(self: Task, run_id: str) -> None:
    store = get_runtime().store
    transition = store.start_run(run_id, self.request.hostname or "unknown")
    if transition.outcome == "missing":
        log.warning("run %s does not exist (expired or never created)", run_id)
    dispatch(run_id, transition.ready)


class StepTask(Task):  # type: ignore[misc]
    """`run_step`, plus what must happen when its process is killed on the hard limit."""

    def on_failure(
        self, exc: Exception, task_id: str, args: Any, kwargs: Any, einfo: ExceptionInfo
    ) -> None:
        # Celery calls this in the worker's main process when the hard time limit killed
        # the child: the attempt is recorded as timed out here (retries still apply),
        # since the child that would have recorded it is gone.
        if not isinstance(exc, TimeLimitExceeded):
            return
        run_id, step, attempt = args
        hard_limit = float(exc.args[0]) if exc.args else 0.0
        message = f"{timed_out_message(hard_limit)} (hard limit) and was terminated"
        transition = get_runtime().store.finish_step(run_id, step, attempt, "failed", message, "")
        dispatch(run_id, transition.ready)


@shared_task(name=RUN_STEP, bind=True, ignore_result=True, base=StepTask)
def run_step(self: Task, run_id: str, step: str, attempt: int) -> None:
    runtime = get_runtime()
    store = runtime.store
    worker = self.request.hostname or "unknown"
    start = store.start_step(run_id, step, attempt, worker, self.request.id or "")
    if start is None:
        # Someone already took this attempt: a duplicate or a redelivered message.
        # If it was this very message, its first execution is gone (Celery redelivers
        # a message whose worker process died): the attempt is taken over.
        lost = store.resume_step(
            run_id, step, attempt, "worker_lost", task_id=self.request.id or "-"
        )
        if lost.outcome == "resumed":
            log.warning(
                "run %s: step %s attempt %d lost its worker process; resumed", run_id, step, attempt
            )
        # Otherwise the worker that ran it may have died before dispatching what it
        # made ready; dispatching again is harmless, the scripts fence every attempt.
        dispatch(run_id, lost.ready or store.continuation(run_id, step, attempt))
        return
    _, soft_limit = self.request.timelimit or (None, None)
    outcome = execute(
        runtime.tools,
        start.definition,
        start.run_input,
        start.outputs,
        StepContext(store, run_id, step, attempt),
        timeout_s=float(soft_limit or runtime.settings.step_timeout_s),
        max_output_bytes=runtime.settings.max_output_bytes,
    )
    transition = store.finish_step(
        run_id, step, attempt, outcome.status, outcome.message, outcome.output_json
    )
    dispatch(run_id, transition.ready)


@shared_task(name=ENFORCE_CANCEL, bind=True, ignore_result=True)
def enforce_cancel(self: Task, run_id: str) -> None:
    """End a cancelled run whose running steps did not stop within the grace."""
    for task_id in get_runtime().store.enforce_cancel(run_id):
        # The step is already recorded as cancelled; this frees its worker slot.
        self.app.control.revoke(task_id, terminate=True, signal="SIGKILL")
