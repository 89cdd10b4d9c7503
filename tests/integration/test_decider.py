"""The one decider (`advance`, prelude.lua) and the kind seam (`ENTER_KIND`) at their
edges, against a real Redis of the test's own (`quiet_db`: no worker sweeps it): a
chain of ten thousand steps closed inside the decider, a step lost too often under
`on_error: continue`, runs created before steps had kinds.
"""

from __future__ import annotations

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

#: The literal-value kind of tests/integration/test_step_kinds.py, the shape README
#: "Adding a step kind" describes (close at once, hand back to `advance`).
VALUE_KIND = """
ENTER_KIND['value'] = function(step, attempt, ready, delay_s)
  local value = step_get(step, 'value')
  close_step(step, 'succeeded', '', value, '"output":' .. value)
  advance(ready, step, 'succeeded')
end
"""


def scenario(steps: list[dict[str, Any]]) -> Any:
    return parse_scenario(
        {"schema_version": "1", "scenario_id": "k", "name": "K", "steps": steps}, {"echo"}
    )


@pytest.fixture
def store(settings: Settings, quiet_db: str) -> RunStore:
    return RunStore.from_settings(replace(settings, redis_url=quiet_db))


@pytest.fixture
def rq(quiet_db: str) -> redis.Redis:
    return redis.Redis.from_url(quiet_db, decode_responses=True)


def test_a_long_chain_of_steps_a_kind_closes_at_once_starts(
    store: RunStore, rq: redis.Redis
) -> None:
    """A scenario may have 10,000 steps. A kind that closes its steps at once (as the
    README's literal-value kind does, through `advance`) must not nest one call per
    step of a chain: the Lua call stack would limit a run's length, and Redis keeps what
    a failing script wrote (a run half closed, never finished)."""
    n = 10_000
    names = [f"s{i}" for i in range(n)]
    run_id = str(uuid.uuid4())
    store.create_run(run_id, scenario([{"name": name, "tool": "echo"} for name in names]), {})
    rq.hset(
        keys.run_steps(run_id),
        mapping={
            f"{name}.{field}": v
            for name in names
            for field, v in (("kind", "value"), ("value", "1"))
        },
    )
    start = rq.register_script(
        prelude()
        + VALUE_KIND
        + """
redis.call('HSET', RUN, 'status', 'running')
local ready = {}
advance(ready, nil)
return {#EMITTED, #ready}
"""
    )
    try:
        _, ready = start(keys=keys.run_keys(run_id))
    except redis.ResponseError as exc:
        # Redis keeps what a failing script wrote: the run is left running, its chain
        # half closed, with no run_finished, and no later call advances it.
        closed = sum(
            1 for name in names if rq.hget(keys.run_steps(run_id), f"{name}.status") == "succeeded"
        )
        status = rq.hget(keys.run(run_id), "status")
        pytest.fail(f"{exc}; left behind: run {status!r}, {closed} of {n} steps closed")
    assert ready == 0
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
    start = store.start_step(run_id, "a", 1, "w")
    assert start is not None and start.definition["tool"] == "echo"
    assert [e.data.get("tool") for e in start.events] == ["echo"]
    snapshot = store.snapshot(run_id)
    assert snapshot is not None and snapshot["steps"][0]["status"] == "running"
