"""The step-kind seam and the one decider against a real Redis of the test's own
(`quiet_db`: no worker sweeps it): a kind's own Lua (`ENTER_KIND`) decides how its due
steps enter an attempt, and the decider (`advance`) carries the run on, also through a
chain of ten thousand steps closed inside it; a step lost too often under
`on_error: continue`; runs created before steps had kinds.

A kind's Lua ships as `tasks/lua/kinds/<kind>.lua`; here the same text is put after
the prelude (`tasks.scripts.prelude`) and before a script body, as every script is
built, so the seam is driven for real without adding a kind to the package.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from typing import Any

import pytest
import redis

from tasks import keys
from tasks.config import Settings
from tasks.scenario import parse_scenario
from tasks.scripts import prelude
from tasks.store import RunStore

#: A kind that closes its step at once with its `value` field as the output: the shape
#: README "Adding a step kind" describes (close at once, hand back to `advance`).
VALUE_KIND = """
ENTER_KIND['value'] = function(step, attempt, ready, delay_s)
  local value = step_get(step, 'value')
  close_step(step, 'succeeded', '', value, '"output":' .. value)
  advance(ready, step, 'succeeded')
end
"""

#: How create_run.lua makes a new run's roots ready, reduced to that decision, on the
#: records as it wrote them before (its steps pending, none owed).
START = """
for _, name in ipairs(split_csv(redis.call('HGET', RUN, 'order'))) do
  step_set(name, 'status', 'pending', 'attempt', '0')
  unwatch_dispatch(name)
end
redis.call('HSET', RUN, 'status', 'running')
local ready = {}
advance(ready, nil)
return {EMITTED, ready}
"""


@pytest.fixture
def store(settings: Settings, quiet_db: str) -> RunStore:
    return RunStore.from_settings(replace(settings, redis_url=quiet_db))


@pytest.fixture
def rq(quiet_db: str) -> redis.Redis:
    return redis.Redis.from_url(quiet_db, decode_responses=True)


def scenario(steps: list[dict[str, Any]]) -> Any:
    return parse_scenario(
        {"schema_version": "1", "scenario_id": "k", "name": "K", "steps": steps}, {"echo"}
    )


def start_with_value_steps(
    store: RunStore, r: redis.Redis, names: list[str], values: dict[str, Any]
) -> tuple[str, list[str], list[str]]:
    """Start a chain of echo steps of which those in `values` are value steps; the
    events the start appended (`type:step`) and the steps it offered to workers."""
    run_id = str(uuid.uuid4())
    store.create_run(run_id, scenario([{"name": name, "tool": "echo"} for name in names]), {})
    fields: dict[str, str] = {}
    for step, value in values.items():
        fields |= {f"{step}.kind": "value", f"{step}.value": json.dumps(value)}
    r.hset(keys.run_steps(run_id), mapping=fields)
    script = r.register_script(prelude() + VALUE_KIND + START)
    emitted, ready = script(keys=keys.run_keys(run_id))
    bodies = [json.loads(body) for body in emitted[1::2]]
    return run_id, [f"{e['type']}:{e.get('step', '')}" for e in bodies], ready[0::4]


def test_a_kind_closing_its_step_at_once_releases_its_dependants(
    store: RunStore, rq: redis.Redis
) -> None:
    run_id, events, ready = start_with_value_steps(store, rq, ["a", "b"], {"a": {"x": [1]}})
    assert events == ["step_finished:a"]
    assert ready == ["b"]  # a tool step: offered to a worker
    inputs = store.attempt_inputs(run_id, "b")
    assert inputs is not None and inputs.outputs == {}  # b references nothing of a
    assert store.start_step(run_id, "b", 1, "w@test") is not None
    snapshot = store.snapshot(run_id)
    assert snapshot is not None
    assert [(s["name"], s["status"], s["output"]) for s in snapshot["steps"]] == [
        ("a", "succeeded", {"x": [1]}),
        ("b", "running", None),
    ]


def test_a_run_of_such_steps_finishes_once(store: RunStore, rq: redis.Redis) -> None:
    run_id, events, ready = start_with_value_steps(
        store, rq, ["a", "b", "c"], {"a": 1, "b": 2, "c": 3}
    )
    # Each closes inside the decider that made it due; the run ends once, at the end.
    assert events == ["step_finished:a", "step_finished:b", "step_finished:c", "run_finished:"]
    assert ready == []
    summary = store.summary(run_id)
    assert summary is not None and summary["status"] == "succeeded"


def test_a_long_chain_of_steps_a_kind_closes_at_once_starts(
    store: RunStore, rq: redis.Redis
) -> None:
    """A scenario may have 10,000 steps. A kind that closes its steps at once must not
    nest one call per step of a chain: the Lua call stack would limit a run's length,
    and Redis keeps what a failing script wrote (a run half closed, never finished)."""
    names = [f"s{i}" for i in range(10_000)]
    run_id, events, ready = start_with_value_steps(store, rq, names, dict.fromkeys(names, 1))
    assert ready == []
    assert events.count("run_finished:") == 1 and len(events) == 10_001
    assert rq.hget(keys.run(run_id), "status") == "succeeded"


# -- the rules kept -----------------------------------------------------------------


def test_a_step_lost_too_often_fails_the_run_even_under_on_error_continue(
    store: RunStore, rq: redis.Redis
) -> None:
    run_id = str(uuid.uuid4())
    steps = [{"name": "a", "tool": "echo", "on_error": "continue"}, {"name": "b", "tool": "echo"}]
    store.create_run(run_id, scenario(steps), {})
    assert [s.step for s in store.start_run(run_id, "w").ready] == ["a"]
    attempt = 1
    for _ in range(store.settings.max_resumes + 1):
        assert store.start_step(run_id, "a", attempt, "w") is not None
        t = store.resume_step(run_id, "a", attempt, "worker_lost")
        attempt += 1
    assert t.outcome == "closed" and t.ready == []
    run = rq.hgetall(keys.run(run_id))
    assert (run["status"], run["reason"]) == ("failed", "worker_lost")
    assert rq.hget(keys.run_steps(run_id), "b.status") == "skipped"


def test_a_run_created_before_kinds_starts_its_steps_as_tool_steps(
    store: RunStore, rq: redis.Redis
) -> None:
    run_id = str(uuid.uuid4())
    store.create_run(run_id, scenario([{"name": "a", "tool": "echo"}]), {})
    rq.hdel(keys.run_steps(run_id), "a.kind")  # as the previous version wrote it
    assert [s.step for s in store.start_run(run_id, "w").ready] == ["a"]
    inputs = store.attempt_inputs(run_id, "a")
    assert inputs is not None and inputs.definition["tool"] == "echo"
    start = store.start_step(run_id, "a", 1, "w")
    assert start is not None
    assert [e.data.get("tool") for e in start.events] == ["echo"]
    snapshot = store.snapshot(run_id)
    assert snapshot is not None and snapshot["steps"][0]["status"] == "running"
