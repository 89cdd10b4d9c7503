"""What the API shows of a run (SPEC §6): its summary, its entry in a listing, and its
snapshot with one entry per step, each built from the run's Redis hashes.

These models are the one description of those shapes: the store builds them from what
it reads and answers with their `model_dump()` (fields in the order declared here, the
documented order), and `web/openapi.py` generates their schemas from them.

A view reports what is stored; it does not police it. Constraints that the writers
already enforce (progress within 0..1, a run id that is a UUID) are documented in the
schema only, so that a value stored by an older version still reads.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from .kinds import kind_named
from .statuses import RunStatus, StepStatus


def _documented(**schema: Any) -> Any:
    """A field whose JSON Schema says `schema` without the model enforcing it."""
    return Field(json_schema_extra=schema)


RunId = Annotated[str, _documented(format="uuid")]
Timestamp = Annotated[str, _documented(format="date-time")]
JsonObject = Annotated[Any, WithJsonSchema({"type": "object"})]


class View(BaseModel):
    """A read-only view; enum fields hold their plain string values."""

    model_config = ConfigDict(frozen=True, use_enum_values=True)


class RunSummary(View):
    """A run as `POST /api/runs` and cancelling answer it."""

    run_id: RunId
    scenario_id: str
    status: RunStatus
    input: JsonObject
    created_at: Timestamp
    started_at: str | None
    finished_at: str | None
    message: str

    @classmethod
    def from_hash(cls, run: Mapping[str, str | None]) -> RunSummary | None:
        """The summary of a run's hash (or of its summary fields); None if no run."""
        if not run.get("run_id"):
            return None
        return cls.model_validate(
            {
                "run_id": run["run_id"],
                "scenario_id": run.get("scenario_id"),
                "status": run.get("status"),
                "input": _json(run.get("input")),
                "created_at": run.get("created_at"),
                "started_at": run.get("started_at"),
                "finished_at": run.get("finished_at"),
                "message": run.get("message") or "",
            }
        )


class ListedRun(View):
    """An entry of `GET /api/runs`: a run summary without `input` (the snapshot has it)."""

    run_id: RunId
    scenario_id: str
    status: RunStatus
    created_at: Timestamp
    started_at: str | None
    finished_at: str | None
    message: str

    @classmethod
    def from_values(cls, values: list[str | None]) -> ListedRun:
        """The entry of the values of `LISTED_FIELDS`, read in that order."""
        fields = dict(zip(LISTED_FIELDS, values, strict=True))
        fields["message"] = fields["message"] or ""
        return cls.model_validate(fields)


#: How an attempt ended (`running` while it runs); `interrupted`: taken over, its
#: execution lost (`reason` says why) and the step handed to a new attempt. Documented,
#: not enforced (a later version may add words).
AttemptStatus = Annotated[
    str, _documented(enum=["running", "succeeded", "failed", "cancelled", "interrupted"])
]
#: Why an attempt ended other than normally, or why another attempt followed it.
AttemptReason = Annotated[
    str, _documented(enum=["retry", "timeout", "worker_lost", "shutdown", "cancelled"])
]
#: How many attempts of a step its record keeps, the latest (`ATTEMPTS_KEPT` in
#: lua/prelude.lua, which writes them).
ATTEMPTS_KEPT = 50


class AttemptRecord(View):
    """One attempt of a step, as the scripts recorded it when it started and ended."""

    attempt: Annotated[int, _documented(minimum=1)]
    status: AttemptStatus
    worker: str = Field(description="The worker that ran it (its Celery hostname).")
    started_at: Timestamp
    finished_at: str | None
    duration_ms: float | None
    message: str
    reason: AttemptReason | None = Field(
        description=(
            "Why it ended other than normally, or why another attempt followed: `retry` "
            "(failed, retried after `delay_s`), `timeout`, `worker_lost` (taken over after "
            "its worker died), `shutdown` (handed back at a graceful shutdown), "
            "`cancelled`; null for a plain success or failure."
        )
    )
    delay_s: float | None = Field(description="The pause before the retry, for `retry`.")


class StepSnapshot(View):
    """One step of a run's snapshot, in definition order."""

    name: str
    #: None only if the run's step state was lost from Redis.
    tool: str | None
    status: StepStatus
    attempt: Annotated[int, _documented(minimum=0)]
    started_at: str | None
    finished_at: str | None
    duration_ms: float | None
    progress: Annotated[float, _documented(minimum=0, maximum=1)]
    message: str
    output: Any
    needs: list[str] = Field(
        description="The steps this one waits for, from the run's own definition."
    )
    input: Any = Field(description="The step's input as defined, references unresolved.")
    resolved_input: Any = Field(
        description=(
            "The input its latest attempt received, references resolved; null before an "
            "attempt started, when it could not be resolved, or when its JSON is over "
            "64 KiB (then `resolved_input_truncated`)."
        )
    )
    resolved_input_truncated: bool = Field(
        description="Whether `resolved_input` was left out for its size."
    )
    traceback: str | None = Field(
        description=(
            "The traceback of the exception its latest failed attempt's tool raised "
            "(chained ones included; at most 16 KiB, its middle cut); null when that "
            "failure had none (a timeout, a cancellation, a declared tool error)."
        )
    )
    attempts: list[AttemptRecord] = Field(
        description=f"Its attempts, oldest first: the latest {ATTEMPTS_KEPT} at most."
    )

    @classmethod
    def from_hash(cls, name: str, fields: Mapping[str, str]) -> StepSnapshot:
        """Step `name` of a run's steps hash (its fields are `<name>.<field>`)."""

        def get(field: str) -> str | None:
            return fields.get(f"{name}.{field}")

        attempt = int(get("attempt") or 0)
        definition = _json(get("def")) or {}
        kind = kind_named(get("kind"))
        status = kind.public_status(get("status") or StepStatus.PENDING, attempt)
        return cls.model_validate(
            {
                "name": name,
                "tool": get("tool"),
                "status": status,
                "attempt": attempt,
                "started_at": get("started_at") if status != StepStatus.PENDING else None,
                "finished_at": get("finished_at"),
                "duration_ms": _num(get("duration_ms")),
                "progress": _num(get("progress")) or 0.0,
                "message": get("message") or "",
                "output": _json(get("output")),
                # From the definition the run carries, so the graph and the step's input
                # template are the run's own even if the scenario file has changed since.
                "needs": definition.get("needs", []),
                "input": definition.get("input", {}),
                "resolved_input": _json(get("resolved_input")),
                "resolved_input_truncated": get("resolved_input_truncated") == "1",
                "traceback": get("traceback") or None,
                "attempts": _attempts(name, attempt, fields),
            }
        )


class RunSnapshot(RunSummary):
    """`GET /api/runs/<run_id>`: the run with its steps, consistent with its stream up
    to `last_event_id`."""

    worker: str | None
    reason: str | None = Field(
        description="Why the run ended other than succeeded (see `run_finished`)."
    )
    failed_step: str | None = Field(
        description="The step whose failure failed the run (the first, if several)."
    )
    cancel_requested_at: str | None = Field(
        description="When cancelling was asked for; null if it never was."
    )
    last_event_id: str | None
    steps: list[StepSnapshot]
    queued_reason: str | None = Field(
        default=None,
        description=(
            "Why the run waits for a worker, read from the worker registry when the "
            "snapshot is: `no live worker`, `no worker consumes queue <name>`, or "
            "`all <n> worker slots are busy`. Null unless the run is queued, or running "
            "with ready steps no worker has started, and null then too when a worker "
            "should be taking them."
        ),
    )

    @classmethod
    def from_hashes(cls, run: Mapping[str, str], steps: Mapping[str, str]) -> RunSnapshot | None:
        """The snapshot of a run's hash and its steps hash; None if no run."""
        summary = RunSummary.from_hash(run)
        if summary is None:
            return None
        return cls.model_validate(
            {
                **dict(summary),
                "worker": run.get("worker"),
                "reason": run.get("reason") or None,
                "failed_step": run.get("failed_step") or None,
                "cancel_requested_at": run.get("cancel_requested") or None,
                "last_event_id": run.get("last_event_id"),
                "steps": [StepSnapshot.from_hash(name, steps) for name in run["order"].split(",")],
            }
        )


#: The fields of a run summary, in order.
SUMMARY_FIELDS = tuple(RunSummary.model_fields)
#: The fields of a listed run, in order: a run summary without `input`.
LISTED_FIELDS = tuple(ListedRun.model_fields)
#: The fields of each entry of a snapshot's `steps`, in order.
STEP_FIELDS = tuple(StepSnapshot.model_fields)


def _attempts(name: str, attempt: int, fields: Mapping[str, str]) -> list[AttemptRecord]:
    """Step `name`'s kept attempt records, oldest first (the latest may be a retry
    not yet started, which has none)."""
    first = max(1, attempt - ATTEMPTS_KEPT + 1)
    raw = (fields.get(f"{name}.attempts.{n}") for n in range(first, attempt + 1))
    return [AttemptRecord.model_validate_json(record) for record in raw if record]


def _json(raw: str | None) -> Any:
    return None if raw is None or raw == "" else json.loads(raw)


def _num(raw: str | None) -> float | None:
    return None if raw is None or raw == "" else float(raw)
