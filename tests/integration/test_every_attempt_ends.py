"""Every attempt ends: whatever raises in a worker after an attempt started, and whatever
is lost (a message never sent, a run's state evicted), the run still ends.

Faults are injected in the real worker process by the `fault` test tool, for its own
run only; the backstops are the real sweeper of a real worker.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from conftest import WorkerProcess, events_until_finished, start_worker
from stacks import Databases, Stack

from tasks import keys
from tasks.config import Settings
from tasks.loader import load_scenarios
from tasks.store import RunStore

#: Faults left to the sweeper's backstops, seconds each: left out of `make test-fast`.
pytestmark = pytest.mark.slow

#: Short backstops, so that the sweeper acts within seconds.
BACKSTOPS = {"redeliver_s": 2.0, "attempt_grace_s": 0.0}


@pytest.fixture(scope="module")
def isolated(databases: Databases, base_env: dict[str, str]) -> Stack:
    """Store and broker databases of their own, with short backstops."""
    return databases.stack(
        base_env,
        STEPSTREAM_REDELIVER_S="2",
        STEPSTREAM_ATTEMPT_GRACE_S="0",
        STEPSTREAM_REDIS_RETRY_S="0.5",
    )


@pytest.fixture(scope="module")
def stack(
    isolated: Stack,
    app_factory: Callable[..., Any],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Any, RunStore, WorkerProcess]]:
    """A web app and one worker on databases of their own, with short backstops."""
    env = isolated.env
    app = app_factory(**isolated.urls, **BACKSTOPS)
    worker = start_worker(env, "ends", tmp_path_factory.mktemp("ends"), concurrency=2)
    store = app.extensions["stepstream"].store
    try:
        yield app, store, worker
    finally:
        worker.stop()


@pytest.fixture(scope="module")
def db(isolated: Stack) -> Iterator[redis.Redis]:
    """A client of the stack's store database, to look at what the store keeps."""
    client = isolated.store()
    yield client
    client.close()


def finished(db: redis.Redis, run_id: str, timeout: float = 30.0) -> list[dict[str, Any]]:
    """The run's events once it has finished."""
    return events_until_finished(db, run_id, timeout, what=f"run {run_id} to finish")


def submit(app: Any, scenario_id: str, run_input: dict[str, Any]) -> str:
    response = app.test_client().post(
        "/api/runs", json={"scenario_id": scenario_id, "input": run_input}
    )
    assert response.status_code == 202, response.get_json()
    return str(response.get_json()["run_id"])


def step_finished(events: list[dict[str, Any]], step: str) -> dict[str, Any]:
    return [e for e in events if e["type"] == "step_finished" and e["step"] == step][-1]


def test_a_message_redis_cannot_store_still_ends_the_attempt(stack: Any, db: redis.Redis) -> None:
    app, _, _ = stack
    events = finished(db, submit(app, "test_fault", {"point": "raise_surrogate"}))
    failed = step_finished(events, "f")
    assert failed["status"] == "failed"
    assert failed["message"] == "RuntimeError: broken \\udc80 text"
    assert events[-1]["status"] == "failed" and events[-1]["reason"] == "step_failed"


def test_a_soft_time_limit_landing_in_the_finish_write_still_ends_the_run(
    stack: Any, db: redis.Redis
) -> None:
    app, _, _ = stack
    events = finished(db, submit(app, "test_fault", {"point": "finish_soft_limit"}))
    assert step_finished(events, "f")["status"] == "succeeded"
    assert step_finished(events, "after")["status"] == "succeeded"
    assert events[-1]["status"] == "succeeded"
    assert [e["type"] for e in events].count("step_finished") == 2


def test_an_attempt_whose_end_cannot_be_written_is_ended_at_its_deadline(
    stack: Any, db: redis.Redis
) -> None:
    """Every write of the end fails (Redis gone for longer than the retry window, as far
    as that worker can tell): the sweeper records it failed once past its deadline
    (1 s time limit + 10 s hard-limit grace + 0 s attempt grace)."""
    app, _, _ = stack
    events = finished(db, submit(app, "test_fault", {"point": "finish_outage"}), timeout=60)
    failed = step_finished(events, "f")
    assert failed["status"] == "failed"
    assert "did not end within its time limit" in failed["message"]
    assert step_finished(events, "after")["status"] == "skipped"
    assert events[-1]["status"] == "failed"
    assert db.zcard(keys.running_attempts()) == 0


def test_successors_whose_dispatch_failed_are_sent_again(stack: Any, db: redis.Redis) -> None:
    app, _, worker = stack
    events = finished(db, submit(app, "test_fault", {"point": "dispatch_outage"}))
    assert events[-1]["status"] == "succeeded"
    assert "sending it again" in worker.log()
    assert db.zcard(keys.owed_dispatches()) == 0


def test_a_queued_run_whose_start_was_never_sent_is_started(stack: Any, db: redis.Redis) -> None:
    """The web recorded the run and died before sending it (here: it never sends)."""
    app, store, _ = stack
    catalog = app.extensions["stepstream"].catalog
    run_id = "never-sent-" + str(id(store))
    store.create_run(run_id, catalog.get("hello_sequence"), {"name": "Ada"})
    events = finished(db, run_id)
    assert events[-1]["status"] == "succeeded"


def test_a_run_whose_steps_were_evicted_fails_with_state_lost(stack: Any, db: redis.Redis) -> None:
    app, store, _ = stack
    catalog = app.extensions["stepstream"].catalog
    run_id = "evicted-" + str(id(store))
    store.create_run(run_id, catalog.get("hello_sequence"), {"name": "Ada"})
    db.delete(keys.run_steps(run_id))  # as maxmemory-policy allkeys-lru would
    events = finished(db, run_id)
    assert events[-1]["status"] == "failed" and events[-1]["reason"] == "state_lost"
    assert "maxmemory-policy" in events[-1]["message"]
    assert store.snapshot(run_id)["status"] == "failed"  # type: ignore[index]


def test_retry_delays_are_capped_however_the_backoff_grows(
    r: redis.Redis, settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """3600 s * 10^(n-1) overflows any countdown by attempt 12; the delay stays 3600 s."""
    directory = tmp_path_factory.mktemp("retry_cap")
    (directory / "s.yaml").write_text(
        "schema_version: '1'\nscenario_id: capped\nname: capped\nsteps:\n"
        "  - {name: s, tool: fail, input: {message: no},"
        " retry: {max_attempts: 100, backoff_s: 3600, backoff_factor: 10}}\n"
    )
    scenario = load_scenarios(directory, {"fail"}).scenarios["capped"]
    store = RunStore.from_settings(settings)
    store.create_run("capped-run", scenario, {})
    ready = store.start_run("capped-run", "w").ready
    delays = []
    for attempt in range(1, 30):
        assert store.start_step("capped-run", "s", attempt, "w") is not None
        transition = store.finish_step("capped-run", "s", attempt, "failed", "no", "")
        (ready_step,) = transition.ready
        delays.append(ready_step.delay_s)
    assert delays[:4] == [3600, 3600, 3600, 3600] and max(delays) == 3600
    assert ready and ready[0].step == "s"
