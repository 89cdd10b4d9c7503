"""A run has no task of its own (SPEC §8, §15): the web records it with its roots ready
and sends their `run_step` tasks itself; the first step to start starts the run.

Proven here: a POST sends nothing but its roots' `run_step` messages; a run completes
with no `run_scenario` task ever received; `run_started` is appended once, before any
`step_started`, even when two roots start at the same moment on two workers; a run whose
roots were recorded but never sent (the web died in between) is sent by the sweeper
once; and a run created by an earlier version (roots pending, a `run_scenario` message
in the broker) still runs.
"""

from __future__ import annotations

import base64
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis

from devtools.celery_worker import WorkerProcess, start_worker
from tasks import keys
from tasks.config import Settings
from tasks.scenario import parse_scenario
from tasks.store import RunStore
from tasks.task_names import RUN_SCENARIO, RUN_STEP
from tests.conftest import url_of
from tests.stacks import Databases, Stack, events_until_finished
from worker.celery_app import create_celery_app
from worker.publish import publish_steps

BODY = {"scenario_id": "hello_sequence", "input": {"name": "Ada"}}


def two_roots(steps_dir: Path) -> Any:
    """Two roots that can only finish if they run at the same time (a barrier of two),
    then a join."""
    barrier = {"dir": str(steps_dir), "parties": 2}
    return parse_scenario(
        {
            "schema_version": "1",
            "scenario_id": "two_roots",
            "name": "Two roots",
            "steps": [
                {"name": "a", "tool": "barrier", "input": {**barrier, "name": "a"}},
                {"name": "b", "tool": "barrier", "needs": [], "input": {**barrier, "name": "b"}},
                {"name": "join", "tool": "echo", "needs": ["a", "b"], "input": {}},
            ],
        },
        {"barrier", "echo"},
    )


def broker_tasks(broker: redis.Redis) -> list[tuple[str, list[Any]]]:
    """The task name and args of every message waiting in the broker database."""
    out = []
    for key in broker.scan_iter():
        if broker.type(key) != b"list":
            continue
        for raw in broker.lrange(key, 0, -1):
            message = json.loads(raw)
            out.append((message["headers"]["task"], json.loads(_body(message))[0]))
    return out


def _body(message: dict[str, Any]) -> str:
    return base64.b64decode(message["body"]).decode()


def types(events: list[Any]) -> list[str]:
    return [e["type"] for e in events]


def check_started_once(events: list[Any]) -> None:
    """`run_started` once, before every `step_started`, naming the worker of the step
    that started first."""
    assert types(events).count("run_started") == 1
    started = types(events).index("run_started")
    steps = [i for i, e in enumerate(events) if e["type"] == "step_started"]
    assert steps and started < steps[0]
    assert events[started]["worker"] == events[steps[0]]["worker"]


# -- the web sends roots, not a run task -----------------------------------------------


def test_a_post_sends_its_roots_run_step_tasks_and_no_run_task(
    app_factory: Callable[..., Any], r: redis.Redis, broker: redis.Redis
) -> None:
    client = app_factory(broker_url=url_of(broker)).test_client()
    response = client.post("/api/runs", json=BODY)
    assert response.status_code == 202
    run_id = response.get_json()["run_id"]
    assert response.get_json()["status"] == "queued"
    assert broker_tasks(broker) == [(RUN_STEP, [run_id, "greet", 1])]
    snapshot = client.get(f"/api/runs/{run_id}").get_json()
    assert snapshot["status"] == "queued"
    assert r.hget(keys.run_steps(run_id), "greet.status") == "ready"
    # The root is owed: should its message be lost, the sweeper sends it again.
    assert r.zrange(keys.owed_dispatches(), 0, -1) == [f"{run_id}\tgreet"]


def test_runs_complete_with_no_run_task(
    app_factory: Callable[..., Any], worker: WorkerProcess, r: redis.Redis
) -> None:
    client = app_factory().test_client()
    run_ids = [client.post("/api/runs", json=BODY).get_json()["run_id"] for _ in range(3)]
    for run_id in run_ids:
        events = events_until_finished(r, run_id)
        assert events[-1]["status"] == "succeeded"
        assert types(events)[:3] == ["run_queued", "run_started", "step_started"]
        check_started_once(events)
        assert client.get(f"/api/runs/{run_id}").get_json()["worker"] == events[1]["worker"]
    assert f"{RUN_SCENARIO}[" not in worker.log()  # never received
    assert r.zcard(keys.owed_dispatches()) == 0


# -- run_started exactly once ----------------------------------------------------------


def test_two_roots_starting_at_once_start_the_run_once(
    settings: Settings, quiet_db: str, tmp_path: Path
) -> None:
    """Many runs, their two roots started by two threads released together: each run
    gets one `run_started`, from whichever start came first, before both starts."""
    store = RunStore.from_settings(replace(settings, redis_url=quiet_db))
    client = redis.Redis.from_url(quiet_db, decode_responses=True)
    scenario = two_roots(tmp_path)
    for _ in range(30):
        run_id = str(uuid.uuid4())
        created = store.create_run(run_id, scenario, {})
        assert [s.step for s in created.ready] == ["a", "b"]
        gate = threading.Barrier(2)

        def start(step: str, run_id: str = run_id, gate: threading.Barrier = gate) -> None:
            gate.wait()
            assert store.start_step(run_id, step, 1, f"w-{step}@test") is not None

        threads = [threading.Thread(target=start, args=(s,)) for s in ("a", "b")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        events = [json.loads(f["data"]) for _, f in client.xrange(keys.run_events(run_id))]
        assert types(events) == ["run_queued", "run_started", "step_started", "step_started"]
        check_started_once(events)
        assert [e["seq"] for e in events] == [1, 2, 3, 4]
    store.close()
    client.close()


@pytest.fixture
def two_workers(
    isolated_stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[WorkerProcess]]:
    """Two worker nodes of one process each: two steps that must run at the same time
    run on both."""
    logs = tmp_path_factory.mktemp("two_workers")
    workers = [start_worker(isolated_stack.env, name, logs, concurrency=1) for name in "xy"]
    yield workers
    for w in workers:
        w.stop()


def test_two_roots_on_two_workers_start_the_run_once(
    isolated_stack: Stack, two_workers: list[WorkerProcess], tmp_path: Path
) -> None:
    settings = Settings.from_env(isolated_stack.env)
    store = RunStore.from_settings(settings)
    run_id = str(uuid.uuid4())
    created = store.create_run(run_id, two_roots(tmp_path), {})
    app = create_celery_app(settings)
    try:
        publish_steps(app, [(run_id, "two_roots", item) for item in created.ready])
    finally:
        app.close()
    with isolated_stack.store() as r:
        events = events_until_finished(r, run_id, timeout=30)
    assert events[-1]["status"] == "succeeded"
    check_started_once(events)
    roots = [e for e in events if e["type"] == "step_started" and e["step"] in ("a", "b")]
    assert len({e["worker"] for e in roots}) == 2  # the barrier made them run at once
    store.close()


# -- the crash window between the record and the send -----------------------------------


@pytest.fixture
def quick_redelivery(databases: Databases, base_env: dict[str, str]) -> Stack:
    """A stack of this test's own whose owed dispatches are due after a second."""
    return databases.stack(base_env, STEPSTREAM_REDELIVER_S="1")


def test_a_run_whose_roots_were_never_sent_is_sent_by_the_sweeper_once(
    app_factory: Callable[..., Any],
    quick_redelivery: Stack,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The web recorded the run and died before sending its roots (here: the send
    raises something that is no broker error, so nothing is undone): the sweeper finds
    the roots owed after STEPSTREAM_REDELIVER_S and sends them, once."""
    from web import api

    def died(runs: Any) -> None:
        raise RuntimeError("the web process died here")

    monkeypatch.setattr(api, "send_roots", died)
    app = app_factory(redeliver_s=1.0, **quick_redelivery.urls)
    response = app.test_client().post("/api/runs", json=BODY)
    assert response.status_code == 500
    with quick_redelivery.store() as r:
        (run_id,) = r.zrange(keys.runs_index(), 0, -1)
        assert r.hget(keys.run(run_id), "status") == "queued"
        w = start_worker(quick_redelivery.env, "sw", tmp_path_factory.mktemp("sweeper"))
        try:
            events = events_until_finished(r, run_id, timeout=30)
            assert events[-1]["status"] == "succeeded"
            check_started_once(events)
            starts = [(e["step"], e["attempt"]) for e in events if e["type"] == "step_started"]
            assert starts == [("greet", 1), ("pause", 1), ("compose", 1)]
            sent = [
                line
                for line in w.log().splitlines()
                if run_id in line and "sending it again" in line
            ]
            assert len(sent) == 1, sent
            assert r.zcard(keys.owed_dispatches()) == 0
        finally:
            w.stop()


# -- runs created by an earlier version -------------------------------------------------

#: What create_run.lua wrote before: the roots pending, and the run's own start owed.
AS_BEFORE = """
for _, name in ipairs(split_csv(redis.call('HGET', RUN, 'order'))) do
  step_set(name, 'status', 'pending', 'attempt', '0')
  unwatch_dispatch(name)
end
watch_dispatch(nil, 0)
"""


def test_a_run_created_by_an_earlier_version_is_started_by_its_run_task(
    isolated_stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """An upgrade may find `run_scenario` messages in the broker, for runs whose roots
    are pending: that task still starts them."""
    from tasks.scripts import prelude

    settings = Settings.from_env(isolated_stack.env)
    store = RunStore.from_settings(settings)
    w = start_worker(isolated_stack.env, "old", tmp_path_factory.mktemp("legacy"))
    try:
        with isolated_stack.store() as r:
            run_id = str(uuid.uuid4())
            app = create_celery_app(settings)
            scenario = parse_scenario(
                {
                    "schema_version": "1",
                    "scenario_id": "old",
                    "name": "Old",
                    "steps": [
                        {"name": "a", "tool": "echo", "input": {}},
                        {"name": "b", "tool": "echo", "needs": ["a"], "input": {}},
                    ],
                },
                {"echo"},
            )
            store.create_run(run_id, scenario, {})
            r.register_script(prelude() + AS_BEFORE)(keys=keys.run_keys(run_id))
            try:
                app.send_task(RUN_SCENARIO, args=[run_id])
            finally:
                app.close()
            events = events_until_finished(r, run_id, timeout=30)
            assert events[-1]["status"] == "succeeded"
            check_started_once(events)
            assert r.zcard(keys.owed_dispatches()) == 0
    finally:
        w.stop()
        store.close()
