"""The words of the run protocol, each set listed once: run and step statuses (SPEC §4),
event types and finish reasons (SPEC §5), and the outcomes the run scripts report.

Every set is a `StrEnum`: a member is the string it names, so it compares equal to that
string, hashes like it and is written as it in JSON, and code that reads a status from
Redis or from an event compares it with these members directly.

The Lua scripts keep their own strings (Redis runs no Python): the same words appear in
`lua/prelude.lua` (statuses, `emit` of event types, `is_terminal`, reasons) and in each
script's returned outcome or verdict — `start_run`, `start_step`, `finish_step`,
`resume_step`, `cancel_run`, `reindex_run` (`ScriptOutcome`) and `sweep_check`
(`Verdict`). A word added here that a script must know is added there too.
"""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    """A run's status: `queued` → `running` → a terminal one, which never changes."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


#: The statuses a run ends in.
TERMINAL_RUN = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED})
#: Every run status, in lifecycle order (listing filters, index keys, the OpenAPI enum).
RUN_STATUSES = tuple(RunStatus)


class StepStatus(StrEnum):
    """A step's public status: `pending` → `running` → a final one."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


#: The stored status of a step dispatched but not started: internal, never shown (a
#: snapshot shows it as `pending`, or `running` for a retry; see `public_step_status`).
STEP_READY = "ready"


def public_step_status(status: str, attempt: int) -> str:
    """The public status of a step as stored: `ready` is internal (dispatched, not
    started), shown `pending` for a first attempt and `running` for a retry."""
    if status == STEP_READY:
        return StepStatus.PENDING if attempt <= 1 else StepStatus.RUNNING
    return status


class EventType(StrEnum):
    """The `type` of an event (SPEC §5); readers ignore types they do not know."""

    RUN_QUEUED = "run_queued"
    RUN_STARTED = "run_started"
    STEP_STARTED = "step_started"
    STEP_PROGRESS = "step_progress"
    STEP_LOG = "step_log"
    STEP_RETRYING = "step_retrying"
    STEP_FINISHED = "step_finished"
    RUN_RESUMED = "run_resumed"
    RUN_FINISHED = "run_finished"


class Reason(StrEnum):
    """Why a run finished other than succeeded (`run_finished`), or why another worker
    took it over (`run_resumed`: `worker_lost` or `shutdown`)."""

    STEP_FAILED = "step_failed"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"
    WORKER_LOST = "worker_lost"
    SHUTDOWN = "shutdown"
    #: The run's step state was missing from Redis (evicted, or deleted by hand).
    STATE_LOST = "state_lost"


class ScriptOutcome(StrEnum):
    """What a run script reports it did (the first item of its reply)."""

    #: No such run (expired, or never created).
    MISSING = "missing"
    #: start_run, cancel_run, reindex_run: the run had already finished.
    FINISHED = "finished"
    #: finish_step: the attempt's end was recorded and its step closed (the run may go
    #: on or have finished with it).
    RECORDED = "recorded"
    #: start_run: the run was started; start_step: the attempt was granted.
    STARTED = "started"
    #: start_run: the run was already running (a duplicate message).
    RUNNING = "running"
    #: finish_step: the failure is retried as a new attempt.
    RETRYING = "retrying"
    #: The attempt is not the one running (finished, taken over or cancelled meanwhile).
    STALE = "stale"
    #: The run's step state was missing from Redis: the run was failed.
    STATE_LOST = "state_lost"
    #: resume_step: the attempt was handed to a new one.
    RESUMED = "resumed"
    #: resume_step: the step was closed instead (resumed too often, or the run is being
    #: cancelled).
    CLOSED = "closed"
    #: cancel_run: the run was cancelled at once (no step was running).
    CANCELLED = "cancelled"
    #: cancel_run: running steps are given the grace to stop.
    CANCELLING = "cancelling"
    #: reindex_run: the unfinished run was put into the indexes.
    INDEXED = "indexed"


class Verdict(StrEnum):
    """What sweep_check.lua found of an entry of the watch indexes."""

    #: The run ended or vanished: the entry was dropped.
    GONE = "gone"
    #: The run's step state was missing from Redis: the run was failed.
    STATE_LOST = "state_lost"
    #: The attempt is still running past its deadline.
    OVERDUE = "overdue"
    #: The queued run's start is owed again.
    SEND_RUN = "send_run"
    #: The step's ready attempt is owed again.
    SEND_STEP = "send_step"
    #: The entry no longer stands for anything owed (the thing moved on): dropped.
    STALE = "stale"
