"""The Celery tasks: `stepstream.run_scenario` starts a run, `stepstream.run_step` runs
one step attempt and dispatches whatever its completion made ready.

No task waits for another: each step is its own message, and the script that records
a step's end decides, atomically, which steps are ready next. Every message names its
attempt, and the scripts fence on it, so a redelivered or duplicated message does
nothing but complete a dispatch that a crash may have interrupted.
"""

from __future__ import annotations

import logging

from celery import Task, shared_task

from .engine import StepContext, execute
from .runtime import get_runtime
from .scenario import RetryPolicy
from .store import ReadyStep

log = logging.getLogger(__name__)

RUN_SCENARIO = "stepstream.run_scenario"
RUN_STEP = "stepstream.run_step"

#: Extra seconds past a step's soft time limit before its process is killed.
HARD_LIMIT_GRACE_S = 10


def dispatch(run_id: str, ready: list[ReadyStep]) -> None:
    for item in ready:
        run_step.apply_async(
            args=(run_id, item.step, item.attempt),
            countdown=item.delay_s or None,
            soft_time_limit=item.timeout_s,
            time_limit=item.timeout_s + HARD_LIMIT_GRACE_S,
        )


@shared_task(name=RUN_SCENARIO, bind=True, ignore_result=True)
def run_scenario(self: Task, run_id: str) -> None:
    store = get_runtime().store
    transition = store.start_run(run_id, self.request.hostname or "unknown")
    if transition.outcome == "missing":
        log.warning("run %s does not exist (expired or never created)", run_id)
    dispatch(run_id, transition.ready)


@shared_task(name=RUN_STEP, bind=True, ignore_result=True)
def run_step(self: Task, run_id: str, step: str, attempt: int) -> None:
    runtime = get_runtime()
    store = runtime.store
    start = store.start_step(run_id, step, attempt, self.request.hostname or "unknown")
    if start is None:
        # Someone already took this attempt: a duplicate or redelivered message. The
        # worker that ran it may have died before dispatching what it made ready;
        # dispatching again is harmless, since the scripts fence every attempt.
        dispatch(run_id, store.continuation(run_id, step, attempt))
        return
    definition = start.definition
    _, soft_limit = self.request.timelimit or (None, None)
    timeout_s = float(soft_limit or runtime.settings.step_timeout_s)
    outcome = execute(
        runtime.tools,
        definition,
        start.run_input,
        start.outputs,
        StepContext(store, run_id, step, attempt),
        timeout_s=timeout_s,
        max_output_bytes=runtime.settings.max_output_bytes,
    )
    retry = RetryPolicy.model_validate(definition.get("retry") or {})
    retry_delay = None
    if not outcome.succeeded and attempt < retry.max_attempts:
        retry_delay = retry.delay_s(attempt)
    transition = store.finish_step(
        run_id,
        step,
        attempt,
        succeeded=outcome.succeeded,
        message=outcome.message,
        output_json=outcome.output_json,
        retry_delay_s=retry_delay,
    )
    dispatch(run_id, transition.ready)
