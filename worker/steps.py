"""The Celery tasks: `stepstream.run_step` runs one step attempt and dispatches whatever
its completion made ready, and `stepstream.enforce_cancel` ends a cancelled run whose
steps outlived the grace. A run has no task of its own: the web records it with its
roots ready and sends their `run_step` tasks (`publish.publish_steps`); its first step
to start starts it. `stepstream.run_scenario` remains for runs created by an earlier
version, whose start may still be in a broker.

No task waits for another: each step is its own message, and the script that records
a step's end decides, atomically, which steps are ready next (or when to retry). Every
message names its attempt and the scripts fence on it, so a redelivered or duplicated
message does nothing but complete a dispatch that a crash may have interrupted.
"""

from __future__ import annotations

import logging
import os
import random
import time
from typing import Any

from billiard.einfo import ExceptionInfo
from billiard.exceptions import WorkerLostError
from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from celery.worker.request import Request

from tasks.engine import Outcome, Prepared, StepContext, prepare, run_prepared, timed_out
from tasks.errors import BackendUnavailable, BackendUnreachable
from tasks.messages import clean
from tasks.redis_client import backend_errors
from tasks.runtime import get_runtime
from tasks.statuses import Reason, ScriptOutcome, StepStatus
from tasks.store import ReadyStep, RunStore
from tasks.task_names import ENFORCE_CANCEL, RUN_SCENARIO, RUN_STEP
from tasks.workers import incarnation

from .publish import publish_steps

log = logging.getLogger(__name__)


#: How often recording an attempt's end is tried when something interrupts it (a soft
#: time limit landing in the write, a reply lost past the retry window).
FINISH_TRIES = 3


#: What a store write or a publish raises when no answer came: worth trying again.
TRANSIENT = (BackendUnreachable,)


class AttemptFailed(Exception):
    """Raised by `run_step` once its failed attempt is recorded, so that Celery ends the
    task FAILURE (Flower shows it so) rather than SUCCESS. Listed in the task's
    `throws`: Celery logs it as expected, on one line with no traceback; the tool's own
    traceback is in the step's events and snapshot."""


def dispatch(run_id: str, ready: list[ReadyStep], scenario_id: str | None = None) -> None:
    """Send a `run_step` message for each ready step, riding out a broker outage.

    A step recorded as finished whose successors were never sent would leave its run
    waiting, so a worker keeps trying for `STEPSTREAM_REDIS_RETRY_S` (the web, by
    contrast, answers 503 at once). A batch cut short is sent again whole: the copies
    are harmless, since starting an attempt is fenced. `scenario_id` labels the tasks
    in Flower; looked up when not given.
    """
    if not ready:
        return
    if scenario_id is None:
        scenario_id = _scenario_of(run_id)
    deadline = time.monotonic() + get_runtime().settings.redis_retry_s
    pause = 0.05
    while True:
        try:
            with backend_errors:
                _publish(run_id, ready, scenario_id)
            return
        except TRANSIENT as exc:
            if time.monotonic() + pause > deadline:
                raise
            log.warning("run %s: broker unreachable, retrying the dispatch: %s", run_id, exc)
            time.sleep(pause)
            pause = min(pause * 2, 1.0)


def _scenario_of(run_id: str) -> str:
    """The run's scenario, for the tasks' labels only: "" when it cannot be read."""
    try:
        return get_runtime().store.scenario_of(run_id) or ""
    except Exception:
        log.warning("run %s: its scenario could not be read for the task labels", run_id)
        return ""


def _publish(run_id: str, ready: list[ReadyStep], scenario_id: str) -> None:
    publish_steps(run_step.app, ((run_id, scenario_id, item) for item in ready))


def send_run(run_id: str) -> None:
    """Send the message that starts a queued run created by an earlier version."""
    with backend_errors:
        run_scenario.apply_async(args=(run_id,))


@shared_task(name=RUN_SCENARIO, bind=True, ignore_result=True)
def run_scenario(self: Task, run_id: str) -> None:
    """Start a run created by an earlier version (roots pending, its start owed): such a
    message may still be in a broker after an upgrade. For a run created since, whose
    roots are ready already, it only offers them again (harmless: starts are fenced)."""
    store = get_runtime().store
    transition = store.start_run(run_id, self.request.hostname or "unknown")
    if transition.outcome == ScriptOutcome.MISSING:
        log.warning("run %s does not exist (expired or never created)", run_id)
        return
    started = [e for e in transition.events if e.type == "run_started"]
    dispatch(run_id, transition.ready, started[0].data["scenario_id"] if started else None)


class StepRequest(Request):  # type: ignore[misc]
    """A `run_step` request as the worker's main process sees it.

    When a pool child dies mid-step (killed, out of memory), only the main process
    knows that this execution is gone for good: it hands the attempt to a new one
    right here. The message Celery then requeues (`task_reject_on_worker_lost`) finds
    the attempt taken over and does nothing more, and a copy redelivered for any other
    reason (a broker reconnect restores unacknowledged messages) never takes over an
    execution that is still running.
    """

    def on_failure(self, exc_info: ExceptionInfo, *args: Any, **kwargs: Any) -> None:
        exc = exc_info.exception
        exc = getattr(exc, "exc", exc)  # unwrap ExceptionWithTraceback
        lost = isinstance(exc, WorkerLostError | SystemExit | KeyboardInterrupt)
        if lost and not (self._already_cancelled or self._already_revoked):
            try:
                hand_back_lost_execution(self.id, *self.args)
            except Exception:
                # The requeued message is still owed; the sweeper is the last resort.
                log.exception("could not hand back the lost attempt of task %s", self.id)
        super().on_failure(exc_info, *args, **kwargs)


def hand_back_lost_execution(task_id: str, run_id: str, step: str, attempt: int) -> None:
    store = get_runtime().store
    lost = store.resume_step(run_id, step, attempt, Reason.WORKER_LOST, task_id=task_id)
    if lost.outcome != ScriptOutcome.STALE:
        log.warning(
            "run %s: step %s attempt %d lost its worker process: %s",
            run_id,
            step,
            attempt,
            lost.outcome,
        )
    dispatch(run_id, lost.ready)


class StepTask(Task):  # type: ignore[misc]
    """`run_step`, plus what must happen when its process is killed."""

    Request = StepRequest

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
        message = f"{timed_out(hard_limit).message} (hard limit) and was terminated"
        store = get_runtime().store
        finish(store, run_id, step, attempt, StepStatus.FAILED, message, "", reason=Reason.TIMEOUT)


#: Execution tokens: unique, not secret. A generator of this module's own, seeded from
#: the system and again in each forked child, spares every step uuid4's system call;
#: no tool can make two processes draw the same tokens (a tool seeding `random`, as
#: machine-learning code does, seeds the shared generator, not this one).
_TOKENS = random.Random()
os.register_at_fork(after_in_child=_TOKENS.seed)


@shared_task(name=RUN_STEP, bind=True, ignore_result=True, base=StepTask, throws=(AttemptFailed,))
def run_step(self: Task, run_id: str, step: str, attempt: int) -> None:
    runtime = get_runtime()
    store = runtime.store
    worker = self.request.hostname or "unknown"
    # What the attempt runs on, its input resolved before it starts: its start records
    # the input its tool receives (a step's references are to steps that have ended,
    # so nothing read here changes before the start).
    inputs = store.attempt_inputs(run_id, step)
    if inputs is None:  # the run is gone, or its state was lost: the start says which
        prepared = Prepared(failure=Outcome("failed", "the step's definition is missing"))
    else:
        prepared = prepare(inputs.definition_json, inputs.run_input, inputs.outputs)
    # Names this execution, so that a start retried after a lost reply is not refused.
    token = f"{_TOKENS.getrandbits(128):032x}"
    start = store.start_step(
        run_id,
        step,
        attempt,
        worker,
        self.request.id or "",
        token,
        incarnation(),
        input_json=prepared.input_json,
    )
    scenario_id = inputs.scenario_id if inputs else None
    if start is None:
        # Someone already took this attempt: a duplicate or a redelivered message.
        # The worker that ran it may have died before dispatching what it made ready;
        # dispatching again is harmless, the scripts fence every attempt.
        dispatch(run_id, store.continuation(run_id, step, attempt), scenario_id)
        return
    # From here on the attempt is ours and recorded as running: whatever happens, it is
    # recorded as ended before this task returns (or, if even that cannot be written,
    # the sweeper ends it at its deadline).
    _, soft_limit = self.request.timelimit or (None, None)
    timeout_s = float(soft_limit or runtime.settings.step_timeout_s)
    ctx: StepContext | None = None
    try:
        ctx = StepContext(store, run_id, step, attempt)
        outcome = run_prepared(
            runtime.tools,
            prepared,
            ctx,
            timeout_s=timeout_s,
            max_output_bytes=runtime.settings.max_output_bytes,
        )
    except SoftTimeLimitExceeded:
        # Landed after the tool returned (judging its output): still a timeout.
        outcome = timed_out(timeout_s)
    except Exception as exc:
        log.exception("run %s: step %s attempt %d failed outside its tool", run_id, step, attempt)
        outcome = Outcome("failed", f"internal error: {type(exc).__name__}: {exc}")
    try:
        if ctx is not None:
            ctx.events.close()  # every progress and log event lands before step_finished
    except Exception:
        log.exception("run %s: step %s: some of its events could not be written", run_id, step)
    recorded = end_attempt(store, run_id, step, attempt, outcome, scenario_id)
    if recorded.status == "failed":
        raise AttemptFailed(f"run {run_id}: step {step} attempt {attempt}: {recorded.message}")


def end_attempt(
    store: RunStore,
    run_id: str,
    step: str,
    attempt: int,
    outcome: Outcome,
    scenario_id: str | None = None,
) -> Outcome:
    """Record how the attempt ended and dispatch what that made ready, trying again when
    something interrupts the write (each try is safe to repeat: see finish_step.lua).
    Returns the outcome recorded: a plain failure in place of one that could not be."""
    for tries in range(1, FINISH_TRIES + 1):
        try:
            finish(
                store,
                run_id,
                step,
                attempt,
                outcome.status,
                outcome.message,
                outcome.output_json,
                reason=outcome.reason,
                traceback=outcome.traceback,
                scenario_id=scenario_id,
            )
            return outcome
        except Exception as exc:
            if tries == FINISH_TRIES:
                log.exception(
                    "run %s: step %s attempt %d: its end could not be recorded; the sweeper "
                    "will end it at its deadline",
                    run_id,
                    step,
                    attempt,
                )
                raise
            log.warning(
                "run %s: step %s attempt %d: recording its end failed (%s: %s), trying again",
                run_id,
                step,
                attempt,
                type(exc).__name__,
                exc,
            )
            if not isinstance(exc, (SoftTimeLimitExceeded, *TRANSIENT)):
                # Something in the outcome itself cannot be written: record a plain
                # failure that says so instead.
                cause = exc.cause if isinstance(exc, BackendUnavailable) and exc.cause else exc
                message = f"internal error recording the outcome: {type(cause).__name__}: {cause}"
                outcome = Outcome("failed", message)
    raise AssertionError("unreachable: the last try returns or raises")


def finish(
    store: RunStore,
    run_id: str,
    step: str,
    attempt: int,
    status: str,
    message: str,
    output_json: str,
    *,
    reason: str = "",
    traceback: str = "",
    scenario_id: str | None = None,
) -> None:
    """Record an attempt's end and dispatch what it made ready (see `store.finish_step`)."""
    transition = store.finish_step(
        run_id,
        step,
        attempt,
        status,
        clean(message),
        output_json,
        reason=reason,
        traceback=traceback,
    )
    ready = transition.ready
    if transition.outcome == ScriptOutcome.STALE:
        # Either the attempt was taken from us (cancelled, or resumed elsewhere), or
        # this write was retried after Redis took it but lost the reply: then what it
        # made ready is still owed, and the continuation offers it again.
        ready = store.continuation(run_id, step, attempt)
    dispatch(run_id, ready, scenario_id)


@shared_task(name=ENFORCE_CANCEL, bind=True, ignore_result=True)
def enforce_cancel(self: Task, run_id: str) -> None:
    """End a cancelled run whose running steps did not stop within the grace."""
    for task_id in get_runtime().store.enforce_cancel(run_id):
        # The step is already recorded as cancelled; this frees its worker slot.
        self.app.control.revoke(task_id, terminate=True, signal="SIGKILL")
