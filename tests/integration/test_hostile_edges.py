"""Edges found by attacking the running system: an odd worker name, a rolling upgrade,
a cursor in another script's digits, a body built to make a regex crawl, a lost run
whose steps were evicted. Each was a way to break a promise; each test holds it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis
from conftest import Stack, events_until_finished, start_worker, wait_for

from tasks import keys
from tasks.config import Settings


@pytest.fixture
def env(isolated_stack: Stack) -> dict[str, str]:
    return isolated_stack.env


@pytest.mark.slow
def test_a_worker_whose_name_has_a_space_is_never_taken_over_while_alive(
    env: dict[str, str],
    app_factory: Callable[..., Any],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Celery accepts `-n "odd name@host"`: such a worker is alive like any other, and
    a step it holds for longer than 3 heartbeats is never taken over (and run twice)."""
    app = app_factory(
        redis_url=env["STEPSTREAM_REDIS_URL"], broker_url=env["STEPSTREAM_BROKER_URL"]
    )
    client = app.test_client()
    worker = start_worker(env, "odd name", tmp_path_factory.mktemp("odd"), concurrency=1)
    store = redis.Redis.from_url(env["STEPSTREAM_REDIS_URL"], decode_responses=True)
    try:
        response = client.post(
            "/api/runs", json={"scenario_id": "test_slow_progress", "input": {"seconds": 5}}
        )
        run_id = response.get_json()["run_id"]
        events = events_until_finished(store, run_id, timeout=40, what="the run to finish")
        names = [w["name"] for w in client.get("/api/workers").get_json()]
        assert events[-1]["status"] == "succeeded", events[-1]
        assert [e for e in events if e["type"] == "run_resumed"] == []
        assert any(n.startswith("odd name@") for n in names), names
    finally:
        store.close()
        worker.stop()


def make_legacy(
    store: redis.Redis, run_id: str, scenario_id: str, pre_upgrade: bool = False
) -> None:
    """Turn a run into what the code before f7ef954 writes: only `stepstream:runs` and
    the `stepstream:active` set; no status/scenario/watch index entries, no
    redeliver_ms / deadline_grace_ms / running_member fields. With `pre_upgrade` the
    Redis is also made to look never reindexed (4f2492a); without it, the run is one an
    old-version web or worker, still serving in a rolling upgrade, wrote after the first
    new worker's reindex had run."""
    if pre_upgrade:
        store.delete(keys.indexes_version())
    status = store.hget(keys.run(run_id), "status")
    pipe = store.pipeline()
    pipe.zrem(keys.runs_by_status(str(status)), run_id)
    pipe.zrem(keys.runs_by_scenario(scenario_id), run_id)
    pipe.zrem(keys.runs_by_scenario(scenario_id, str(status)), run_id)
    pipe.hdel(keys.scenario_of(), run_id)
    pipe.zrem(keys.owed_dispatches(), run_id)
    for entry in store.zrange(keys.running_attempts(), 0, -1):
        if str(entry).startswith(run_id):
            pipe.zrem(keys.running_attempts(), entry)
    pipe.hdel(keys.run(run_id), "redeliver_ms", "deadline_grace_ms")
    pipe.sadd("stepstream:active", run_id)
    pipe.execute()
    for field in store.hkeys(keys.run_steps(run_id)):
        if str(field).endswith(".running_member"):
            store.hset(keys.run_steps(run_id), field, "")


@pytest.mark.slow
def test_runs_created_before_the_status_indexes_are_listed_by_status(
    env: dict[str, str],
    quiet_db: str,
    app_factory: Callable[..., Any],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Rolling upgrade: a run created by a web process of the previous version after the
    first new worker's one-time reindex is listed by status and scenario once a sweep
    has passed (the sweeper indexes what that version keeps in `stepstream:active`)."""
    app = app_factory(
        redis_url=env["STEPSTREAM_REDIS_URL"], broker_url=env["STEPSTREAM_BROKER_URL"]
    )
    client = app.test_client()
    run_id = client.post(
        "/api/runs", json={"scenario_id": "test_slow_progress", "input": {"seconds": 1}}
    ).get_json()["run_id"]
    store = redis.Redis.from_url(env["STEPSTREAM_REDIS_URL"], decode_responses=True)
    store.set(keys.indexes_version(), 2)  # a new worker's first sweep has reindexed
    make_legacy(store, run_id, "test_slow_progress")
    everything = [r["run_id"] for r in client.get("/api/runs").get_json()["runs"]]
    assert everything == [run_id]
    # No worker consumes this broker database: the run stays queued, only swept.
    sweeper = start_worker(
        {**env, "STEPSTREAM_BROKER_URL": quiet_db},
        "sweeper",
        tmp_path_factory.mktemp("sweeper"),
        concurrency=1,
    )
    try:
        for query in ("status=queued", "scenario_id=test_slow_progress"):

            def listed(query: str = query) -> list[str]:
                runs = client.get(f"/api/runs?{query}").get_json()["runs"]
                return [r["run_id"] for r in runs]

            assert wait_for(listed, what=f"the run listed by {query}") == [run_id]
    finally:
        sweeper.stop()
        store.close()


@pytest.mark.slow
def test_a_run_started_before_the_upgrade_is_taken_over_when_its_node_is_lost(
    env: dict[str, str],
    app_factory: Callable[..., Any],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A node of the previous version, still serving in a rolling upgrade after the
    one-time reindex, starts an attempt that is in no index; lost mid-step (SIGKILL),
    it is taken over all the same: the sweeper indexes what that version keeps in
    `stepstream:active`."""
    import os
    import signal

    env = {**env, "STEPSTREAM_REDELIVER_S": "2"}
    app = app_factory(
        redis_url=env["STEPSTREAM_REDIS_URL"], broker_url=env["STEPSTREAM_BROKER_URL"]
    )
    client = app.test_client()
    logs = tmp_path_factory.mktemp("legacy")
    old = start_worker(env, "old", logs, concurrency=1)
    store = redis.Redis.from_url(env["STEPSTREAM_REDIS_URL"], decode_responses=True)
    new = None
    try:
        run_id = client.post(
            "/api/runs", json={"scenario_id": "test_slow_progress", "input": {"seconds": 30}}
        ).get_json()["run_id"]
        steps = keys.run_steps(run_id)
        wait_for(lambda: store.hget(steps, "long.status") == "running", what="the long step")
        make_legacy(store, run_id, "test_slow_progress")
        os.killpg(old.proc.pid, signal.SIGKILL)
        old.proc.wait(timeout=10)
        new = start_worker(env, "new", logs, concurrency=1)
        events = events_until_finished(store, run_id, timeout=60, what="the run to finish")
        assert events[-1]["status"] == "succeeded", events[-1]
    finally:
        store.close()
        for w in (old, new):
            if w is not None:
                w.stop()


@pytest.mark.slow
def test_a_cursor_in_unicode_digits_cannot_drop_every_subscriber_of_the_process(
    worker: Any, live_server: Any
) -> None:
    """An `after` in Arabic-Indic digits is no stream id: it is refused (400) rather than
    passed to the hub, whose XREAD Redis would refuse, dropping every subscriber of the
    process (WebSocket close 1013)."""
    import threading

    import httpx
    from clients import submit, ws_events

    victim_run = submit(live_server.url, "test_silent", {"seconds": 4})["run_id"]
    result: dict[str, Any] = {}

    def follow() -> None:
        result["events"], result["code"] = ws_events(live_server.ws_url, victim_run)

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    hub = live_server.app.extensions["stepstream"].hub
    wait_for(lambda: hub.subscriber_count() >= 1, what="the victim to join the hub")

    own_run = submit(live_server.url, "test_silent", {"seconds": 4})["run_id"]

    def quiet_and_running() -> str | None:
        snap = httpx.get(f"{live_server.url}/api/runs/{own_run}").json()
        return snap["last_event_id"] if snap["steps"][0]["status"] == "running" else None

    last = wait_for(quiet_and_running, what="the attacker's run to be running")
    arabic = last.translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩"))
    for query in ({"after": arabic}, {}):
        headers = {} if query else {"Last-Event-ID": arabic.encode()}
        answer = httpx.get(
            f"{live_server.url}/api/runs/{own_run}/events", params=query, headers=headers
        )
        assert answer.status_code == 400, answer.text
    thread.join(timeout=30)
    assert result["code"] == 1000, result.get("code")
    assert result["events"][-1]["type"] == "run_finished"


def test_a_body_of_escaped_quotes_is_refused_in_linear_time(client: Any) -> None:
    """The depth check strips strings before counting brackets. Past 64 brackets, an
    unterminated string of escaped quotes once made that quadratic (64 KiB: 10 s of
    CPU; 1 MiB: 45 min, stalling a gevent process's every stream). It is linear."""
    import time

    body = "[" * 65 + '"' + '\\"' * 32_000  # 64 KiB, far below max_body_bytes
    started = time.monotonic()
    response = client.post("/api/runs", data=body, content_type="application/json")
    elapsed = time.monotonic() - started
    assert response.status_code == 400
    assert elapsed < 1.0, f"{elapsed:.1f} s for a {len(body)} byte body"


def test_a_lost_run_whose_steps_were_evicted_is_failed_and_its_entry_dropped(
    r: redis.Redis, settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Steps hash evicted while a step runs, and its worker gone: the takeover finds
    nothing to resume, so the run is failed `state_lost` and its entry dropped, rather
    than looked at again on every sweep for ever."""
    from dataclasses import replace

    from tasks.store import RunStore
    from worker.sweeper import Sweeper

    directory = tmp_path_factory.mktemp("evicted")
    (directory / "s.yaml").write_text(
        "schema_version: '1'\nscenario_id: one\nname: one\nsteps:\n"
        "  - {name: s, tool: echo, timeout_s: 1}\n"
    )
    scenario = load_scenarios_for(directory)
    fast = replace(settings, heartbeat_s=0.01, attempt_grace_s=0.0)
    store = RunStore.from_settings(fast)
    store.create_run("evicted-run", scenario, {})
    store.start_run("evicted-run", "ghost@nowhere")
    assert store.start_step("evicted-run", "s", 1, "ghost@nowhere") is not None
    r.delete(keys.run_steps("evicted-run"))  # evicted under memory pressure
    sweeper = Sweeper(store, "sweeper@here")

    def swept_and_ended() -> bool:
        r.delete(keys.sweeper_lock())
        sweeper.sweep()
        return r.hget(keys.run("evicted-run"), "status") == "failed"

    try:
        wait_for(swept_and_ended, timeout=5, what="the run to fail state_lost")
    finally:
        left = r.zrange(keys.running_attempts(), 0, -1)
    assert r.hget(keys.run("evicted-run"), "reason") == "state_lost"
    assert left == []


def load_scenarios_for(directory: Any) -> Any:
    from tasks.loader import load_scenarios

    result = load_scenarios(directory, {"echo"})
    return next(iter(result.scenarios.values()))
