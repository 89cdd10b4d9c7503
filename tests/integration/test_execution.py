"""Execution semantics against real workers: parallelism, retries, timeouts, on_error,
duplicate messages and output limits.

Runs are followed over WebSocket until `run_finished` (or awaited on the run's stream
with XREAD BLOCK); nothing here waits with a fixed sleep. The `flaky`, `barrier` and
`stubborn` tools come from `tests/tools`, registered through the real `stepstream.tools`
entry-point group in this process and in the worker subprocesses.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from clients import submit, ws_events
from conftest import LiveServer, WorkerProcess, events_until_finished, start_worker, wait_for

from tasks.config import Settings
from tasks.scenario import parse_scenario
from tasks.store import RunStore
from worker.celery_app import create_celery_app

Event = dict[str, Any]


# -- helpers ----------------------------------------------------------------------------


def follow(server: LiveServer, run_id: str) -> list[Event]:
    """Every event of the run, over WebSocket, up to run_finished and the 1000 close."""
    events: list[Event]
    events, code = ws_events(server.ws_url, run_id)
    assert code == 1000, events
    check_stream(events, run_id)
    return events


def check_stream(events: list[Event], run_id: str) -> None:
    """seq 1..n with no gap or repeat, one run_finished and it is last."""
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert all(e["run_id"] == run_id for e in events)
    assert [e["type"] for e in events].count("run_finished") == 1
    assert events[-1]["type"] == "run_finished"


def of(events: list[Event], event_type: str, step: str | None = None) -> list[Event]:
    return [
        e for e in events if e["type"] == event_type and (step is None or e.get("step") == step)
    ]


def one(events: list[Event], event_type: str, step: str) -> Event:
    found = of(events, event_type, step)
    assert len(found) == 1, found
    return found[0]


def ts(event: Event) -> datetime:
    return datetime.fromisoformat(event["ts"])


def snapshot(server: LiveServer, run_id: str) -> dict[str, Any]:
    response = httpx.get(f"{server.url}/api/runs/{run_id}", timeout=10)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def steps_by_name(snap: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in snap["steps"]}


# -- parallelism ----------------------------------------------------------------------


def test_diamond_branches_run_concurrently_and_join_waits_for_both(
    live_server: LiveServer, worker: WorkerProcess, tmp_path: Path
) -> None:
    barrier_dir = tmp_path / "barrier"
    run = submit(live_server.url, "test_diamond_barrier", {"dir": str(barrier_dir)})
    events = follow(live_server, run["run_id"])

    final = events[-1]
    assert final["status"] == "succeeded", final
    # Proof one: B and C each passed a barrier of two, so both were running at once.
    assert sorted(p.name for p in barrier_dir.iterdir()) == ["b", "c"]
    started = {s: one(events, "step_started", s)["seq"] for s in "abcd"}
    finished = {s: one(events, "step_finished", s)["seq"] for s in "abcd"}
    assert all(one(events, "step_finished", s)["status"] == "succeeded" for s in "abcd")
    # Proof two, from the stream alone: each branch started before the other finished.
    assert started["b"] < finished["c"]
    assert started["c"] < finished["b"]
    # A before both branches; D only after both.
    assert finished["a"] < min(started["b"], started["c"])
    assert started["d"] > max(finished["b"], finished["c"])
    snap = snapshot(live_server, run["run_id"])
    assert steps_by_name(snap)["d"]["output"] == {"b": "b", "c": "c"}


# -- retries ----------------------------------------------------------------------------


def test_flaky_step_is_retried_with_backoff_until_it_succeeds(
    live_server: LiveServer, worker: WorkerProcess, tmp_path: Path
) -> None:
    counter = tmp_path / "counter"
    run = submit(
        live_server.url, "test_flaky_retry", {"counter_file": str(counter), "fail_times": 2}
    )
    events = follow(live_server, run["run_id"])

    assert events[-1]["status"] == "succeeded", events[-1]
    started = of(events, "step_started", "flaky")
    retrying = of(events, "step_retrying", "flaky")
    assert [e["attempt"] for e in started] == [1, 2, 3]
    assert [(e["attempt"], e["delay_s"]) for e in retrying] == [(1, 0.2), (2, 0.4)]
    assert [e["message"] for e in retrying] == ["attempt 1 failed", "attempt 2 failed"]
    finished = one(events, "step_finished", "flaky")
    assert finished["attempt"] == 3 and finished["status"] == "succeeded"
    assert finished["output"] == {"attempts": 3}
    # Attempts alternate: started 1, retrying 1, started 2, retrying 2, started 3, finished.
    flaky_types = [(e["type"], e["attempt"]) for e in events if e.get("step") == "flaky"]
    assert flaky_types == [
        ("step_started", 1),
        ("step_retrying", 1),
        ("step_started", 2),
        ("step_retrying", 2),
        ("step_started", 3),
        ("step_finished", 3),
    ]
    # The backoff is honoured. The retry is a Celery countdown on the next attempt's
    # message (the worker records the failure, publishes attempt n+1 with a countdown
    # and is free meanwhile), not a sleep in the worker; the next attempt can only be
    # taken once that countdown has passed after the step_retrying event was written.
    for retry, next_start in zip(retrying, started[1:], strict=True):
        waited = (ts(next_start) - ts(retry)).total_seconds()
        assert waited >= retry["delay_s"], (retry, next_start)
    assert counter.read_text() == "3"
    snap = snapshot(live_server, run["run_id"])
    step = steps_by_name(snap)["flaky"]
    assert step["status"] == "succeeded" and step["attempt"] == 3
    assert step["output"] == {"attempts": 3}


def test_step_that_always_fails_exhausts_its_attempts_and_fails_the_run(
    live_server: LiveServer, worker: WorkerProcess
) -> None:
    run = submit(live_server.url, "test_always_fails")
    events = follow(live_server, run["run_id"])

    final = events[-1]
    assert final["status"] == "failed" and final["reason"] == "step_failed", final
    assert "always broken" in final["message"]
    assert [e["attempt"] for e in of(events, "step_started", "doomed")] == [1, 2]
    retrying = of(events, "step_retrying", "doomed")
    assert [(e["attempt"], e["message"]) for e in retrying] == [(1, "always broken")]
    finished = one(events, "step_finished", "doomed")
    assert finished["attempt"] == 2 and finished["status"] == "failed"
    assert finished["message"] == "always broken"
    step = steps_by_name(snapshot(live_server, run["run_id"]))["doomed"]
    assert step["status"] == "failed" and step["attempt"] == 2


# -- timeouts ---------------------------------------------------------------------------


def test_timeout_stops_a_tool_that_ignores_cancellation(
    live_server: LiveServer, worker: WorkerProcess
) -> None:
    submitted = time.monotonic()
    run = submit(live_server.url, "test_stubborn_timeout", {"seconds": 30})
    events = follow(live_server, run["run_id"])
    elapsed = time.monotonic() - submitted

    # The tool would run 30 s; the 1 s soft time limit raises inside it.
    assert elapsed < 15, f"run_finished after {elapsed:.1f} s"
    finished = one(events, "step_finished", "stuck")
    assert finished["status"] == "failed" and finished["attempt"] == 1
    assert "timed out" in finished["message"], finished
    final = events[-1]
    assert final["status"] == "failed" and final["reason"] == "step_failed", final
    assert "timed out" in final["message"]
    step = steps_by_name(snapshot(live_server, run["run_id"]))["stuck"]
    assert step["status"] == "failed" and "timed out" in step["message"]


@pytest.mark.slow
def test_each_retried_attempt_times_out_on_its_own(
    live_server: LiveServer, worker: WorkerProcess
) -> None:
    submitted = time.monotonic()
    run = submit(live_server.url, "test_stubborn_timeout_retry", {"seconds": 30})
    events = follow(live_server, run["run_id"])
    elapsed = time.monotonic() - submitted

    assert elapsed < 20, f"run_finished after {elapsed:.1f} s"
    assert [e["attempt"] for e in of(events, "step_started", "stuck")] == [1, 2]
    retrying = one(events, "step_retrying", "stuck")
    assert retrying["attempt"] == 1 and "timed out" in retrying["message"], retrying
    finished = one(events, "step_finished", "stuck")
    assert finished["attempt"] == 2 and finished["status"] == "failed"
    assert "timed out" in finished["message"], finished
    final = events[-1]
    assert final["status"] == "failed" and final["reason"] == "step_failed", final


# -- on_error with parallel siblings ---------------------------------------------------------


def test_failed_branch_under_fail_lets_its_sibling_finish_and_skips_the_join(
    live_server: LiveServer, worker: WorkerProcess
) -> None:
    run = submit(live_server.url, "test_sibling_fail")
    events = follow(live_server, run["run_id"])

    final = events[-1]
    assert final["status"] == "failed" and final["reason"] == "step_failed", final
    assert "bad" in final["message"] and "bad broke" in final["message"]
    assert one(events, "step_finished", "bad")["status"] == "failed"
    good = one(events, "step_finished", "good")
    assert good["status"] == "succeeded" and good["output"] == {"slept": 0.5}
    join = one(events, "step_finished", "join")
    assert join["status"] == "skipped"
    assert of(events, "step_started", "join") == []
    # The run ends only once the sibling that was still going has finished.
    assert good["seq"] < final["seq"]
    snap = snapshot(live_server, run["run_id"])
    assert snap["status"] == "failed"
    statuses = {name: s["status"] for name, s in steps_by_name(snap).items()}
    assert statuses == {
        "root": "succeeded",
        "bad": "failed",
        "good": "succeeded",
        "join": "skipped",
    }


def test_failed_branch_under_continue_passes_null_to_the_join(
    live_server: LiveServer, worker: WorkerProcess
) -> None:
    run = submit(live_server.url, "test_sibling_continue")
    events = follow(live_server, run["run_id"])

    final = events[-1]
    assert final["status"] == "succeeded" and "reason" not in final, final
    assert one(events, "step_finished", "bad")["status"] == "failed"
    good = one(events, "step_finished", "good")
    assert good["status"] == "succeeded"
    join_started = one(events, "step_started", "join")
    assert join_started["seq"] > max(good["seq"], one(events, "step_finished", "bad")["seq"])
    join = one(events, "step_finished", "join")
    assert join["status"] == "succeeded"
    assert join["output"] == {"bad": None, "good": {"slept": 0.5}}
    snap = snapshot(live_server, run["run_id"])
    statuses = {name: s["status"] for name, s in steps_by_name(snap).items()}
    assert statuses == {
        "root": "succeeded",
        "bad": "failed",
        "good": "succeeded",
        "join": "succeeded",
    }
    assert steps_by_name(snap)["bad"]["output"] is None


# -- duplicate messages -------------------------------------------------------------------


@pytest.fixture
def other_worker(
    base_env: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
    worker: WorkerProcess,
    r: redis.Redis,  # flush the store before this worker's heartbeat, not after
) -> Iterator[WorkerProcess]:
    """A second worker, so that duplicate messages can race across processes and hosts."""
    w = start_worker(base_env, "w3", tmp_path_factory.mktemp("logs3"))
    yield w
    w.stop()


def _stream(store: RunStore, run_id: str) -> list[Event]:
    return [e.to_dict() for e in store.read_events(run_id, "0", 10_000)]


def _processed(workers: list[WorkerProcess], task_id: str) -> bool:
    line = re.compile(rf"\[{re.escape(task_id)}\] succeeded")
    return any(line.search(w.log()) for w in workers)


@pytest.mark.slow
def test_a_step_message_delivered_twice_runs_its_attempt_once(
    settings: Settings, r: redis.Redis, worker: WorkerProcess, other_worker: WorkerProcess
) -> None:
    workers = [worker, other_worker]
    store = RunStore.from_settings(settings)
    scenario = parse_scenario(
        {
            "schema_version": "1",
            "scenario_id": "test_redelivery",
            "name": "Redelivery",
            "steps": [
                {"name": "first", "tool": "echo", "input": {"n": 1}},
                {
                    "name": "second",
                    "tool": "echo",
                    "input": {"n": {"from": "steps.first.output.n"}},
                },
            ],
        },
        {"echo"},
    )
    run_id = str(uuid.uuid4())
    store.create_run(run_id, scenario, {})
    started = store.start_run(run_id, "test")  # marks the root ready, dispatches nothing
    assert [(s.step, s.attempt) for s in started.ready] == [("first", 1)]
    app = create_celery_app(settings)
    try:
        sent = [app.send_task("stepstream.run_step", args=[run_id, "first", 1]) for _ in range(2)]
        events_until_finished(r, run_id, what="run_finished")
        events = _stream(store, run_id)
        check_stream(events, run_id)
        assert events[-1]["status"] == "succeeded", events[-1]
        for step in ("first", "second"):
            assert len(of(events, "step_started", step)) == 1
            assert len(of(events, "step_finished", step)) == 1
        assert one(events, "step_finished", "second")["output"] == {"n": 1}
        # Both copies were consumed, the second one doing nothing but its continuation.
        for message in sent:
            wait_for(lambda m=message: _processed(workers, m.id), what=f"task {message.id}")
        assert _stream(store, run_id) == events

        # A duplicate of the last step's message after the run has finished: consumed,
        # and nothing is appended to the finished run.
        late = app.send_task("stepstream.run_step", args=[run_id, "second", 1])
        wait_for(lambda: _processed(workers, late.id), what=f"late task {late.id}")
        assert _stream(store, run_id) == events
        snap = store.snapshot(run_id)
        assert snap is not None and snap["last_event_id"] == events[-1]["id"]
        assert snap["status"] == "succeeded"
    finally:
        app.close()


# -- output limits -----------------------------------------------------------------------


def test_large_output_is_left_out_of_the_event_but_kept_in_the_snapshot(
    live_server: LiveServer, worker: WorkerProcess
) -> None:
    text = "stepstream " * 1_900  # about 20 KB, over the 16 KiB event limit
    assert 20_000 <= len(text) <= 21_000
    run = submit(live_server.url, "test_big_output", {"text": text})
    events = follow(live_server, run["run_id"])

    assert events[-1]["status"] == "succeeded", events[-1]
    finished = one(events, "step_finished", "big")
    assert finished["status"] == "succeeded"
    assert finished["output_truncated"] is True
    assert "output" not in finished
    step = steps_by_name(snapshot(live_server, run["run_id"]))["big"]
    assert step["status"] == "succeeded" and step["output"] == {"text": text}


@pytest.mark.slow
def test_a_step_that_swallows_the_soft_limit_is_killed_and_recorded(
    live_server: LiveServer, worker: WorkerProcess
) -> None:
    """Past the hard limit the child is killed; the worker's main process records it."""
    run = submit(live_server.url, "test_immortal_timeout")
    events, code = ws_events(live_server.ws_url, run["run_id"], timeout=60)
    assert code == 1000
    finished = {e["step"]: e for e in events if e["type"] == "step_finished"}
    assert finished["deaf"]["status"] == "failed"
    assert "timed out" in finished["deaf"]["message"]
    assert "terminated" in finished["deaf"]["message"]
    assert finished["after"]["status"] == "skipped"
    assert events[-1]["status"] == "failed" and events[-1]["reason"] == "step_failed"
    # The killed child was replaced: the worker still runs steps.
    more, _ = ws_events(live_server.ws_url, submit(live_server.url, "test_continue")["run_id"])
    assert more[-1]["status"] == "succeeded"
