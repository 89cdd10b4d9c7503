"""The step-kind seam against a real Redis: a kind's own Lua (`ENTER_KIND`) decides how
its due steps enter an attempt, and the one decider (`advance`) carries the run on.

A kind's Lua ships as `tasks/lua/kinds/<kind>.lua`; here the same text is put after
the prelude (`tasks.scripts.prelude`) and before a script body, as every script is
built, so the seam is driven for real without adding a kind to the package.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import redis

from tasks import keys
from tasks.config import Settings
from tasks.scenario import parse_scenario
from tasks.scripts import prelude
from tasks.store import RunStore

#: A kind that closes its step at once with its `value` field as the output.
VALUE_KIND = """
ENTER_KIND['value'] = function(step, attempt, ready, delay_s)
  local value = step_get(step, 'value')
  close_step(step, 'succeeded', '', value, '"output":' .. value)
  advance(ready, step, 'succeeded')
end
"""

#: start_run.lua's queued branch, reduced to its decision.
START = """
redis.call('HSET', RUN, 'status', 'running')
local ready = {}
advance(ready, nil)
return {EMITTED, ready}
"""


def chain(*names: str) -> Any:
    steps = [{"name": name, "tool": "echo"} for name in names]
    return parse_scenario(
        {"schema_version": "1", "scenario_id": "k", "name": "K", "steps": steps}, {"echo"}
    )


def start_with_value_steps(
    store: RunStore, r: redis.Redis, names: tuple[str, ...], values: dict[str, Any]
) -> tuple[str, list[str], list[str]]:
    run_id = str(uuid.uuid4())
    store.create_run(run_id, chain(*names), {})
    for step, value in values.items():
        r.hset(
            keys.run_steps(run_id),
            mapping={f"{step}.kind": "value", f"{step}.value": json.dumps(value)},
        )
    script = r.register_script(prelude() + VALUE_KIND + START)
    emitted, ready = script(keys=keys.run_keys(run_id))
    bodies = [json.loads(body) for body in emitted[1::2]]
    return run_id, [f"{e['type']}:{e.get('step', '')}" for e in bodies], ready[0::4]


def test_a_kind_closing_its_step_at_once_releases_its_dependants(
    settings: Settings, r: redis.Redis
) -> None:
    store = RunStore.from_settings(settings)
    run_id, events, ready = start_with_value_steps(store, r, ("a", "b"), {"a": {"x": [1]}})
    assert events == ["step_finished:a"]
    assert ready == ["b"]  # a tool step: offered to a worker
    start = store.start_step(run_id, "b", 1, "w@test")
    assert start is not None and start.outputs == {}  # b references nothing of a
    snapshot = store.snapshot(run_id)
    assert snapshot is not None
    assert [(s["name"], s["status"], s["output"]) for s in snapshot["steps"]] == [
        ("a", "succeeded", {"x": [1]}),
        ("b", "running", None),
    ]


def test_a_run_of_such_steps_finishes_once(settings: Settings, r: redis.Redis) -> None:
    store = RunStore.from_settings(settings)
    run_id, events, ready = start_with_value_steps(
        store, r, ("a", "b", "c"), {"a": 1, "b": 2, "c": 3}
    )
    # Each closes inside the decider that made it due; the run ends once, at the end.
    assert events == ["step_finished:a", "step_finished:b", "step_finished:c", "run_finished:"]
    assert ready == []
    summary = store.summary(run_id)
    assert summary is not None and summary["status"] == "succeeded"
