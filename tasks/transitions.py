"""Runs created and moved forward: every change is one run script (`lua/*.lua`).

Each script changes the state and appends the event that reports it in one call, so a
snapshot and the stream never disagree, and each recognises its own earlier effect, so
a call repeated after a lost reply changes nothing. The script copies its events to the
all-runs stream too, but for a new run's `run_queued`: its creator copies that one with
`publish_all` once the run's roots were sent (see `create_runs`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii as _string
from typing import Any

from . import keys
from .events import Event
from .redis_client import backend_errors
from .run_records import CreatedRun, ReadyStep, create_args, created, ready_steps
from .scenario import Scenario
from .scripts import StorePart, decode_events
from .statuses import RunStatus, ScriptOutcome, StepStatus

#: Strict JSON (no NaN or Infinity), one encoder for every call rather than one per call.
_encode = json.JSONEncoder(allow_nan=False, separators=(",", ":")).encode


def _members(fields: Mapping[str, Any]) -> str:
    """`fields` as JSON object members, as `_encode` writes them. A progress event's
    (a finite fraction, a message) is written directly: a chatty tool makes thousands a
    second, and the encoder's own setup is most of what each would cost."""
    if len(fields) == 2:
        fraction, message = fields.get("progress"), fields.get("message")
        if type(fraction) is float and math.isfinite(fraction) and type(message) is str:
            return f'"progress":{fraction!r},"message":{_string(message)}'
    return _encode(fields)[1:-1]


@dataclass(frozen=True)
class SweepVerdict:
    """What the sweeper found of one entry of the watch indexes (see sweep_check.lua)."""

    verdict: str
    events: list[Event]
    attempt: int = 0
    timeout_s: float = 0.0


#: The largest resolved input (bytes of JSON) a snapshot keeps for a step; a bigger one
#: is left out and flagged. The input is a copy of what the run already holds (its
#: input, the outputs of needed steps, each up to `max_output_bytes`), kept to show a
#: person what the tool received: 64 KiB is more than anyone reads in a step panel,
#: four times an event's cap, and keeps a snapshot of a 100-step run under 7 MB even
#: when every step's input is that large.
SNAPSHOT_INPUT_BYTES = 65_536


@dataclass(frozen=True)
class AttemptInputs:
    """What an attempt runs on: its step's definition, the run's input, the outputs of
    the steps it references, and the run's scenario (see attempt_inputs.lua)."""

    definition_json: str
    run_input: Any
    outputs: dict[str, Any]
    scenario_id: str

    @property
    def definition(self) -> dict[str, Any]:
        definition: dict[str, Any] = json.loads(self.definition_json)
        return definition


@dataclass(frozen=True)
class StepStart:
    """An attempt just granted: the events its start appended."""

    events: list[Event]


@dataclass(frozen=True)
class Transition:
    """The result of a script that moves a run forward."""

    outcome: str
    events: list[Event]
    ready: list[ReadyStep]
    run_status: str = ""


class Transitions(StorePart):
    """The store's writes (see `store.RunStore`)."""

    @backend_errors
    def create_run(self, run_id: str, scenario: Scenario, run_input: Any) -> CreatedRun:
        """Store a queued run carrying its own copy of the scenario, its roots ready.

        Returns its summary as created, its `run_queued` event, which the caller
        announces with `publish_all` once the run is sent, so that a run undone never
        shows up there, and its ready roots, whose `run_step` tasks the caller sends
        (or, should it die first, the sweeper after `STEPSTREAM_REDELIVER_S`).
        """
        (one,) = self.create_runs([(run_id, scenario, run_input)])
        return one

    @backend_errors
    def create_runs(self, runs: Sequence[tuple[str, Scenario, Any]]) -> list[CreatedRun]:
        """Store many queued runs in one round trip; each as `create_run` does."""
        script = self._scripts["create_run"]
        built = [
            create_args(run_id, sc, run_input, self.settings) for run_id, sc, run_input in runs
        ]
        if len(runs) == 1:
            # One run, one command (a pipeline first asks whether its scripts are loaded).
            replies = [script(keys=keys.run_keys(runs[0][0]), args=built[0][0])]
        else:
            pipe = self._redis.pipeline(transaction=False)
            for (run_id, _, _), (args, _) in zip(runs, built, strict=True):
                script(keys=keys.run_keys(run_id), args=args, client=pipe)
            replies = pipe.execute()
        made = [
            created(run_id, scenario, input_json, decode_events(emitted), ready_steps(ready))
            for (run_id, scenario, _), (_, input_json), (_, emitted, ready, _) in zip(
                runs, built, replies, strict=True
            )
        ]
        # Runs of the index old enough to have expired, read by the script itself (no
        # round trip of its own): the indexes shrink as fast as they grow.
        old = sorted({run_id for reply in replies for run_id in reply[3]})
        if old:
            self.forget_expired(old)
        return made

    @backend_errors
    def queued_roots(self, run_id: str) -> tuple[str, str, list[ReadyStep]]:
        """The run's status ("" when gone), its scenario and, while it is queued, the
        roots its creator owes (see queued_roots.lua); a queued run without any is owed
        its start (a run created by an earlier version)."""
        status, scenario_id, ready = self._run("queued_roots", run_id)
        return status, scenario_id, ready_steps(ready)

    @backend_errors
    def forget_dispatches(self, run_id: str) -> None:
        """Drop the run's owed dispatches from the watch index: before a run that was
        never sent is deleted (`delete_run`)."""
        self._run("forget_dispatches", run_id)

    @backend_errors
    def start_run(self, run_id: str, worker: str) -> Transition:
        """Start a run created by an earlier version (its `run_scenario` task)."""
        outcome, emitted, ready = self._run("start_run", run_id, worker)
        events = decode_events(emitted)
        return Transition(outcome, events, ready_steps(ready))

    @backend_errors
    def attempt_inputs(self, run_id: str, step: str) -> AttemptInputs | None:
        """What an attempt of `step` runs on; None when the run or the step is gone."""
        reply = self._run("attempt_inputs", run_id, step)
        if not reply:
            return None
        definition, run_input, outputs, scenario_id = reply
        return AttemptInputs(
            definition_json=definition,
            run_input=json.loads(run_input),
            outputs={outputs[i]: json.loads(outputs[i + 1]) for i in range(0, len(outputs), 2)},
            scenario_id=scenario_id,
        )

    @backend_errors
    def start_step(
        self,
        run_id: str,
        step: str,
        attempt: int,
        worker: str,
        task_id: str = "",
        token: str = "",
        incarnation: str = "",
        *,
        input_json: str | None = None,
    ) -> StepStart | None:
        """Take attempt `attempt` of `step`; None if it is not ready (already taken).

        `token` names this execution: the same call repeated with it (a retry after a
        lost reply) is granted again instead of refused. `input_json` is the input the
        attempt's tool receives, references resolved (None when it could not be
        resolved): `step_started` carries it (or `input_truncated` past the events' cap)
        and the snapshot keeps it (up to `SNAPSHOT_INPUT_BYTES`).
        """
        fragment, kept, too_big = "", "", "0"
        if input_json is not None:
            if len(input_json) > self.settings.event_output_bytes:
                fragment = '"input_truncated":true'
            else:
                fragment = '"input":' + input_json
            if len(input_json) > SNAPSHOT_INPUT_BYTES:
                too_big = "1"
            else:
                kept = input_json
        reply = self._run(
            "start_step",
            run_id,
            step,
            attempt,
            worker,
            task_id,
            token,
            incarnation,
            fragment,
            kept,
            too_big,
        )
        if reply[0] != ScriptOutcome.STARTED:
            return None
        events = decode_events(reply[1])
        return StepStart(events=events)

    def step_event(
        self,
        run_id: str,
        step: str,
        attempt: int,
        event_type: str,
        fields: Mapping[str, Any],
        progress: float | None = None,
        *,
        number: int,
    ) -> bool:
        """Append one step_progress or step_log (see `step_events`); False if it was not
        (the attempt is no longer running, or the event was appended before)."""
        return (
            self.step_events(run_id, step, attempt, [(event_type, fields, progress, number)]) == 1
        )

    @backend_errors
    def step_events(
        self,
        run_id: str,
        step: str,
        attempt: int,
        batch: list[tuple[str, Mapping[str, Any], float | None, int]],
    ) -> int:
        """Append step_progress and step_log events, in order, in one call, and return
        how many were appended: none if the attempt is no longer running.

        Each item is (type, fields, progress fraction or None, number): `number` counts
        the attempt's events from 1, one by one through the batch, and a number already
        recorded is a repeat of a call whose reply was lost, not appended again.
        """
        if not batch:
            return 0
        first = batch[0][3]
        if [item[3] for item in batch] != list(range(first, first + len(batch))):
            raise ValueError("a batch's events are numbered one by one")
        progress, message = "", ""
        for _, fields, fraction, _ in reversed(batch):
            if fraction is not None:
                progress, message = repr(fraction), str(fields.get("message", ""))
                break
        # Every event of the batch begins with the same members; only `fields` differ.
        head = _encode({"step": step, "attempt": attempt})[1:-1]
        args: list[Any] = [first, progress, message]
        for event_type, fields, _, _ in batch:
            args += [event_type, f"{head},{_members(fields)}" if fields else head]
        return int(self._run("step_event", run_id, step, attempt, *args))

    @backend_errors
    def finish_step(
        self,
        run_id: str,
        step: str,
        attempt: int,
        status: str,
        message: str,
        output_json: str,
        *,
        reason: str = "",
        traceback: str = "",
    ) -> Transition:
        """Record how an attempt ended; returns the steps (or the retry) it made ready.

        `status` is succeeded, failed or cancelled; whether a failure is retried is the
        script's decision, from the step's policy and whether the run is being cancelled.
        `reason` says why it ended other than normally (`timeout`, or ""); `traceback` is
        that of the exception its tool raised ("" for none), for a failure only.
        """
        if status != StepStatus.SUCCEEDED:
            output_json = ""
        if status != StepStatus.FAILED:
            traceback = ""
        if len(output_json) > self.settings.event_output_bytes:
            fragment = '"output_truncated":true'
        else:
            fragment = '"output":' + (output_json or "null")
        outcome, emitted, ready, run_status = self._run(
            "finish_step",
            run_id,
            step,
            attempt,
            status,
            message,
            output_json,
            fragment,
            reason,
            traceback,
        )
        return self._transition(outcome, emitted, ready, run_status)

    @backend_errors
    def resume_step(
        self,
        run_id: str,
        step: str,
        attempt: int,
        reason: str,
        *,
        task_id: str = "",
        holder: str = "",
    ) -> Transition:
        """Hand a running attempt whose execution is gone to a new attempt (see the script)."""
        outcome, emitted, ready, run_status = self._run(
            "resume_step",
            run_id,
            step,
            attempt,
            reason,
            self.settings.max_resumes,
            task_id,
            holder,
        )
        return self._transition(outcome, emitted, ready, run_status)

    def _transition(
        self, outcome: str, emitted: list[str], ready: list[str], run_status: str
    ) -> Transition:
        events = decode_events(emitted)
        return Transition(outcome, events, ready_steps(ready), run_status)

    @backend_errors
    def cancel_run(self, run_id: str) -> Transition:
        """Cancel a run; `ready` is empty, `outcome` says what happened (see the script)."""
        outcome, emitted = self._run("cancel_run", run_id)
        cancelled = outcome == ScriptOutcome.CANCELLED
        return self._transition(outcome, emitted, [], RunStatus.CANCELLED if cancelled else "")

    @backend_errors
    def enforce_cancel(self, run_id: str) -> list[str]:
        """End a cancelled run whose steps outlived the grace; returns their task ids."""
        emitted, task_ids = self._run("enforce_cancel", run_id)
        self._transition("", emitted, [], RunStatus.CANCELLED if emitted else "")
        return [t for t in task_ids if t]

    @backend_errors
    def continuation(self, run_id: str, step: str, attempt: int) -> list[ReadyStep]:
        """What a duplicate of this attempt's message must still dispatch (see the script)."""
        return ready_steps(self._run("continuation", run_id, step, attempt))

    @backend_errors
    def sweep_check(
        self, run_id: str, index: str, entry: str, step: str = "", attempt: int | None = None
    ) -> SweepVerdict:
        """Whether an entry of a watch index is still owed (see sweep_check.lua)."""
        verdict, emitted, current, timeout = self._run(
            "sweep_check", run_id, index, entry, step, "" if attempt is None else attempt
        )
        events = decode_events(emitted)
        return SweepVerdict(verdict, events, int(current or 0), float(timeout or 0))

    @backend_errors
    def cancel_requested(self, run_id: str) -> bool:
        return self._redis.hget(keys.run(run_id), "cancel_requested") is not None
