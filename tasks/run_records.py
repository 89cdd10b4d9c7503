"""What a run's records hold: the fields each step gets in the steps hash when the run
is created, and the ready steps that the scripts hand back to be dispatched.

`create_args` builds the arguments of `lua/create_run.lua`: the run's fields and, for
every step, its `<step>.<field>` entries (status, attempt, dependencies, policy, its
definition as JSON, ...), which the other scripts read and change from then on. A new
per-step field is added here (or, for one kind of step, by its kind's
`stored_fields`, see `tasks/kinds`) and read in the scripts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from .config import HARD_LIMIT_GRACE_S, Settings
from .dag import dependants
from .events import Event
from .kinds import kind_of
from .scenario import Scenario
from .statuses import RunStatus, StepStatus
from .views import RunSummary


@dataclass(frozen=True)
class ReadyStep:
    """A step attempt that a script marked ready: the caller dispatches it."""

    step: str
    attempt: int
    timeout_s: float
    delay_s: float


def ready_steps(flat: list[str]) -> list[ReadyStep]:
    """The ready steps a script returns, as `[step, attempt, timeout, delay, ...]`."""
    return [
        ReadyStep(flat[i], int(flat[i + 1]), float(flat[i + 2]), float(flat[i + 3]))
        for i in range(0, len(flat), 4)
    ]


@dataclass(frozen=True)
class CreatedRun:
    summary: dict[str, Any]
    events: list[Event]
    #: The roots create_run.lua made ready: the caller sends their `run_step` tasks.
    ready: list[ReadyStep]


def create_args(
    run_id: str, scenario: Scenario, run_input: Any, settings: Settings
) -> tuple[list[Any], str]:
    """The arguments of create_run.lua for one run, and the run's input as JSON."""
    order, fields = _scenario_fields(_Same(scenario), settings.step_timeout_s)
    input_json = json.dumps(run_input, allow_nan=False)
    queued = f'"scenario_id":{json.dumps(scenario.scenario_id)},"input":{input_json}'
    args = [
        run_id,
        scenario.scenario_id,
        input_json,
        order,
        settings.event_maxlen,
        settings.run_ttl_s,
        queued,
        int(settings.redeliver_s * 1000),
        int((HARD_LIMIT_GRACE_S + settings.attempt_grace_s) * 1000),
        *fields,
    ]
    return args, input_json


@dataclass(frozen=True, eq=False)
class _Same:
    """A scenario as a cache key: the same object, not an equal one (a scenario is
    immutable, and its dict members make it unhashable)."""

    scenario: Scenario

    def __hash__(self) -> int:
        return id(self.scenario)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Same) and other.scenario is self.scenario


@lru_cache(maxsize=256)
def _scenario_fields(same: _Same, step_timeout_s: float) -> tuple[str, tuple[Any, ...]]:
    """The step order and every step's stored fields: the same for every run of a
    scenario, so built once per scenario loaded rather than once per run (each holds
    the step's definition as JSON). The cache holds the scenario, so its id stays its."""
    scenario = same.scenario
    needs = {step.name: step.needs for step in scenario.steps}
    nexts = dependants(needs)
    fields: list[Any] = []
    for step in scenario.steps:
        kind = kind_of(step)
        timeout = step.timeout_s or step_timeout_s
        for field, value in (
            ("status", StepStatus.PENDING),
            ("attempt", 0),
            ("waiting", len(step.needs)),
            ("kind", kind.name),
            *kind.stored_fields(step).items(),
            ("on_error", step.on_error),
            ("next", ",".join(nexts[step.name])),
            ("refs", ",".join(sorted(step.referenced_steps()))),
            ("timeout_s", timeout),
            ("max_attempts", step.retry.max_attempts),
            ("backoff_s", step.retry.backoff_s),
            ("backoff_factor", step.retry.backoff_factor),
            ("def", json.dumps(step.model_dump(mode="json"), allow_nan=False)),
            ("progress", 0),
            ("message", ""),
            ("root", 1 if not step.needs else 0),
        ):
            fields += [f"{step.name}.{field}", value]
    return ",".join(step.name for step in scenario.steps), tuple(fields)


def created(
    run_id: str, scenario: Scenario, input_json: str, events: list[Event], ready: list[ReadyStep]
) -> CreatedRun:
    """A run as create_run.lua recorded it: its summary, its `run_queued` event, and the
    roots it made ready."""
    summary = RunSummary.from_hash(
        {
            "run_id": run_id,
            "scenario_id": scenario.scenario_id,
            "status": RunStatus.QUEUED,
            "input": input_json,
            "created_at": events[0].data["ts"],
        }
    )
    assert summary is not None  # it has a run_id
    return CreatedRun(summary.model_dump(), events, ready)
