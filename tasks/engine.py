"""Running one step attempt: resolve its input before it starts (`prepare`, so that its
start records what the tool received), then hand it to its step's kind (a tool step
calls its tool) and judge the output (`run_prepared`).

This module knows nothing of Celery but its soft time limit; `worker/steps.py` wires it
to tasks and the store.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from celery.exceptions import SoftTimeLimitExceeded

from .errors import BackendUnavailable, StepCancelled, StepstreamError
from .kinds import StepBase, kind_of, step_from_definition, step_from_json
from .messages import clean
from .step_events import EventWriter
from .store import RunStore
from .tools import ToolContext, ToolLookup
from .tracebacks import formatted

log = logging.getLogger(__name__)

#: How long `ctx.cancelled` trusts its last read of the run, so that a tool polling it
#: in a tight loop does not turn into a Redis load test.
CANCEL_CHECK_INTERVAL_S = 0.25


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended: succeeded with an output, failed or cancelled with a message."""

    status: Literal["succeeded", "failed", "cancelled"]
    message: str
    output_json: str = ""
    #: Why it ended other than normally: `timeout`, or "".
    reason: str = ""
    #: The traceback of the exception the tool raised ("" when it raised none, or one
    #: of ours that its message says all of: a declared `ToolFailure`, a bad reference).
    traceback: str = ""

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"


def failed(message: str) -> Outcome:
    return Outcome("failed", message)


def timed_out(timeout_s: float) -> Outcome:
    return Outcome("failed", timed_out_message(timeout_s), reason="timeout")


@dataclass(frozen=True)
class Prepared:
    """An attempt about to start: its step and the input it receives, resolved and as
    JSON (None for a kind that takes none), or the failure it ends with at once."""

    step: StepBase | None = None
    resolved: Any = None
    input_json: str | None = None
    failure: Outcome | None = None


def prepare(
    definition: Mapping[str, Any] | str, run_input: Any, outputs: dict[str, Any]
) -> Prepared:
    """Resolve what an attempt receives (its step's definition, or the definition's
    stored JSON); a failure to resolve it is its outcome."""
    try:
        if isinstance(definition, str):
            step = step_from_json(definition)
        else:
            step = step_from_definition(definition)
        resolved = kind_of(step).resolve(step, run_input, outputs)
        # Encoded now, before the tool runs: a tool may change the object it was given.
        input_json = None if resolved is None else json.dumps(resolved, allow_nan=False)
    except StepstreamError as exc:  # a bad reference
        return Prepared(failure=failed(exc.message))
    except Exception as exc:
        log.exception("a step's input could not be resolved: %.200s", definition)
        return Prepared(failure=failed(clean(f"{type(exc).__name__}: {exc}")))
    return Prepared(step, resolved, input_json)


class StepContext:
    """The `ctx` a tool receives: progress and logs become events of the run."""

    def __init__(self, store: RunStore, run_id: str, step: str, attempt: int) -> None:
        self.store = store
        self.run_id = run_id
        self.step = step
        self.attempt = attempt
        self._cancelled = False
        self._checked_at = 0.0
        self.events = EventWriter(store, run_id, step, attempt)

    def progress(self, fraction: float, message: str = "") -> None:
        fraction = min(1.0, max(0.0, float(fraction)))
        fields = {"progress": fraction, "message": clean(message)}
        self.events.put("step_progress", fields, fraction)

    def log(self, message: str) -> None:
        self.events.put("step_log", {"message": clean(message)})

    @property
    def cancelled(self) -> bool:
        now = time.monotonic()
        if not self._cancelled and now - self._checked_at >= CANCEL_CHECK_INTERVAL_S:
            self._checked_at = now
            self._cancelled = self.store.cancel_requested(self.run_id)
        return self._cancelled


def execute(
    tools: ToolLookup,
    definition: dict[str, Any],
    run_input: Any,
    outputs: dict[str, Any],
    ctx: ToolContext,
    *,
    timeout_s: float,
    max_output_bytes: int,
) -> Outcome:
    """Prepare and run an attempt in one go (see `run_prepared`)."""
    return run_prepared(
        tools,
        prepare(definition, run_input, outputs),
        ctx,
        timeout_s=timeout_s,
        max_output_bytes=max_output_bytes,
    )


def run_prepared(
    tools: ToolLookup,
    prepared: Prepared,
    ctx: ToolContext,
    *,
    timeout_s: float,
    max_output_bytes: int,
) -> Outcome:
    """Run the attempt to its end, as its step's kind runs it, and judge its output;
    every failure becomes a failed Outcome, never a raise."""
    if prepared.failure is not None or prepared.step is None:
        return prepared.failure or failed("internal error: nothing to run")
    step = prepared.step
    try:
        output = kind_of(step).run(step, prepared.resolved, ctx, tools)
    except SoftTimeLimitExceeded:
        return timed_out(timeout_s)
    except StepCancelled as exc:
        return Outcome("cancelled", exc.message)
    except BackendUnavailable as exc:  # Redis failed the tool's progress or cancel check
        log.exception("step %s of run %s lost its store", ctx.step, ctx.run_id)
        return failed(clean(exc.message))
    except StepstreamError as exc:  # ToolFailure, unknown tools, a bad input
        return failed(exc.message)
    except Exception as exc:
        log.exception("step %s of run %s crashed", ctx.step, ctx.run_id)
        message = clean(f"{type(exc).__name__}: {exc}")
        return Outcome("failed", message, traceback=formatted(exc))
    try:
        output_json = json.dumps(output, allow_nan=False, separators=(",", ":"))
        # Strict JSON holds valid Unicode only: a lone surrogate cannot be encoded.
        json.dumps(output, ensure_ascii=False).encode()
    except (TypeError, ValueError) as exc:
        return failed(f"output is not JSON: {clean(exc)}")
    if len(output_json) > max_output_bytes:
        return failed(
            f"output is {len(output_json)} bytes of JSON, over the limit of {max_output_bytes}"
        )
    return Outcome("succeeded", "", output_json)


def timed_out_message(timeout_s: float) -> str:
    return f"timed out after {timeout_s:g} s"
