"""What a person debugging a step sees: the input its tool received, the traceback of
what it raised, the history of its attempts (retries, takeovers, hand-backs), and its
Celery task's state and labels as Flower shows them.

The store-level tests drive the scripts by hand on a database no worker sweeps; the
others run real workers and wait on the run's stream (XREAD BLOCK) or on Celery's own
events, never on a fixed sleep.
"""

from __future__ import annotations

import ast
import json
import os
import signal
import threading
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis
from conftest import WorkerProcess, events_until_finished, wait_for, wait_for_event

from tasks.config import Settings
from tasks.scenario import parse_scenario
from tasks.store import RunStore
from tasks.tracebacks import MAX_TRACEBACK_CHARS
from tasks.transitions import SNAPSHOT_INPUT_BYTES
from worker.celery_app import create_celery_app

Event = dict[str, Any]


def of(events: list[Event], event_type: str, step: str) -> list[Event]:
    return [e for e in events if e["type"] == event_type and e.get("step") == step]


def submit(client: Any, scenario_id: str, run_input: dict[str, Any]) -> str:
    response = client.post("/api/runs", json={"scenario_id": scenario_id, "input": run_input})
    assert response.status_code == 202, response.get_data(as_text=True)
    run_id: str = response.get_json()["run_id"]
    return run_id


def snapshot_step(client: Any, run_id: str, step: str) -> dict[str, Any]:
    response = client.get(f"/api/runs/{run_id}")
    assert response.status_code == 200
    found: dict[str, Any] = next(s for s in response.get_json()["steps"] if s["name"] == step)
    return found


def essentials(attempts: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(a["attempt"], a["status"], a["reason"]) for a in attempts]


# -- the scripts, by hand ------------------------------------------------------------


@pytest.fixture
def store(settings: Settings, quiet_db: str) -> Iterator[RunStore]:
    """A store on a database of this test's own: no worker sweeps the attempts that the
    test starts under made-up worker names."""
    s = RunStore.from_settings(replace(settings, redis_url=quiet_db))
    yield s
    s.close()


def one_step_run(store: RunStore, **step: Any) -> str:
    scenario = parse_scenario(
        {
            "schema_version": "1",
            "scenario_id": "s",
            "name": "S",
            "steps": [{"name": "only", "tool": "echo", **step}],
        },
        {"echo"},
    )
    run_id = str(uuid.uuid4())
    store.create_run(run_id, scenario, {})
    assert store.start_run(run_id, "w@test").outcome == "started"
    return run_id


def step_of(store: RunStore, run_id: str) -> dict[str, Any]:
    snapshot = store.snapshot(run_id)
    assert snapshot is not None
    only: dict[str, Any] = snapshot["steps"][0]
    return only


def test_no_attempt_before_the_first_starts(store: RunStore) -> None:
    run_id = one_step_run(store)
    step = step_of(store, run_id)
    assert step["resolved_input"] is None and step["resolved_input_truncated"] is False
    assert step["traceback"] is None and step["attempts"] == []


def test_the_resolved_input_is_capped_for_events_and_for_the_snapshot(store: RunStore) -> None:
    small = json.dumps({"text": "x" * 100})
    medium = json.dumps({"text": "x" * (store.settings.event_output_bytes + 1)})
    large = json.dumps({"text": "x" * (SNAPSHOT_INPUT_BYTES + 1)})
    for input_json, in_event, in_snapshot in (
        (small, True, True),
        (medium, False, True),
        (large, False, False),
    ):
        run_id = one_step_run(store)
        start = store.start_step(run_id, "only", 1, "w@test", input_json=input_json)
        assert start is not None
        (started,) = [e.data for e in start.events]
        assert started["worker"] == "w@test"
        if in_event:
            assert started["input"] == json.loads(input_json) and "input_truncated" not in started
        else:
            assert started["input_truncated"] is True and "input" not in started
        step = step_of(store, run_id)
        assert step["resolved_input"] == (json.loads(input_json) if in_snapshot else None)
        assert step["resolved_input_truncated"] is (not in_snapshot)


def test_an_unresolvable_input_starts_the_attempt_without_one(store: RunStore) -> None:
    run_id = one_step_run(store)
    start = store.start_step(run_id, "only", 1, "w@test", input_json=None)
    assert start is not None
    (started,) = [e.data for e in start.events]
    assert "input" not in started and "input_truncated" not in started
    assert step_of(store, run_id)["resolved_input"] is None


def test_each_attempt_is_recorded_as_it_starts_and_ends(store: RunStore) -> None:
    run_id = one_step_run(store, retry={"max_attempts": 3, "backoff_s": 0.5})
    store.start_step(run_id, "only", 1, "w1@host")
    (running,) = step_of(store, run_id)["attempts"]
    assert running["status"] == "running" and running["worker"] == "w1@host"
    assert running["finished_at"] is None and running["duration_ms"] is None
    store.finish_step(run_id, "only", 1, "failed", "boom", "", traceback="Traceback: one\n")
    store.start_step(run_id, "only", 2, "w2@host")
    store.finish_step(run_id, "only", 2, "failed", "timed out after 1 s", "", reason="timeout")
    mid = step_of(store, run_id)
    # The latest failure had no traceback (a timeout): none is shown.
    assert mid["traceback"] is None and mid["status"] == "running" and mid["attempt"] == 3
    store.start_step(run_id, "only", 3, "w1@host")
    store.finish_step(run_id, "only", 3, "succeeded", "", '{"ok":true}')
    step = step_of(store, run_id)
    assert essentials(step["attempts"]) == [
        (1, "failed", "retry"),
        (2, "failed", "retry"),
        (3, "succeeded", None),
    ]
    first, second, third = step["attempts"]
    assert (first["delay_s"], second["delay_s"], third["delay_s"]) == (0.5, 1.0, None)
    assert [a["worker"] for a in step["attempts"]] == ["w1@host", "w2@host", "w1@host"]
    assert first["message"] == "boom" and second["message"] == "timed out after 1 s"
    assert all(a["finished_at"] and a["duration_ms"] >= 0 for a in step["attempts"])
    assert third["started_at"] == step["started_at"] and third["finished_at"] == step["finished_at"]


def test_a_timeout_that_ends_the_step_says_so(store: RunStore) -> None:
    run_id = one_step_run(store)
    store.start_step(run_id, "only", 1, "w@test")
    store.finish_step(run_id, "only", 1, "failed", "timed out after 1 s", "", reason="timeout")
    assert essentials(step_of(store, run_id)["attempts"]) == [(1, "failed", "timeout")]


def test_takeovers_and_hand_backs_are_recorded(store: RunStore) -> None:
    run_id = one_step_run(store)
    store.start_step(run_id, "only", 1, "w1@host")
    assert store.resume_step(run_id, "only", 1, "worker_lost").outcome == "resumed"
    store.start_step(run_id, "only", 2, "w2@host")
    assert store.resume_step(run_id, "only", 2, "shutdown").outcome == "resumed"
    store.start_step(run_id, "only", 3, "w3@host")
    # Resumed as often as allowed (2): the next loss fails the step.
    assert store.resume_step(run_id, "only", 3, "worker_lost").outcome == "closed"
    step = step_of(store, run_id)
    assert essentials(step["attempts"]) == [
        (1, "interrupted", "worker_lost"),
        (2, "interrupted", "shutdown"),
        (3, "failed", "worker_lost"),
    ]
    assert [a["worker"] for a in step["attempts"]] == ["w1@host", "w2@host", "w3@host"]
    assert "worker was lost" in step["attempts"][0]["message"]
    assert "shutting down" in step["attempts"][1]["message"]
    assert step["status"] == "failed" and step["traceback"] is None


def test_a_cancelled_attempt_is_recorded(store: RunStore) -> None:
    run_id = one_step_run(store)
    store.start_step(run_id, "only", 1, "w@test")
    store.cancel_run(run_id)
    store.enforce_cancel(run_id)
    (cancelled,) = step_of(store, run_id)["attempts"]
    assert (cancelled["status"], cancelled["reason"]) == ("cancelled", "cancelled")


def test_the_history_keeps_the_latest_attempts_only(store: RunStore) -> None:
    run_id = one_step_run(store, retry={"max_attempts": 60, "backoff_s": 0.0})
    for attempt in range(1, 61):
        assert store.start_step(run_id, "only", attempt, "w@test") is not None
        store.finish_step(run_id, "only", attempt, "failed", f"try {attempt}", "")
    attempts = step_of(store, run_id)["attempts"]
    assert [a["attempt"] for a in attempts] == list(range(11, 61))
    fields = store._redis.hkeys(f"stepstream:run:{{{run_id}}}:steps")
    assert sum(".attempts." in f for f in fields) == 50


# -- real workers ----------------------------------------------------------------------


def test_the_input_a_step_received_is_in_its_start_and_the_snapshot(
    client: Any, r: redis.Redis, worker: WorkerProcess
) -> None:
    value = {"deep": [1, {"two": 2}], "text": "ünïcode"}
    run_id = submit(client, "test_debug_inputs", {"value": value})
    events = events_until_finished(r, run_id)
    assert events[-1]["status"] == "succeeded"
    (make,) = of(events, "step_started", "make")
    (use,) = of(events, "step_started", "use")
    assert make["input"] == {"v": value, "lit": 1}
    assert use["input"] == {"got": value, "fixed": "x"}
    assert use["worker"].startswith("w1@") and make["worker"].startswith("w1@")
    step = snapshot_step(client, run_id, "use")
    assert step["resolved_input"] == {"got": value, "fixed": "x"}
    assert step["input"] == {"got": {"from": "steps.make.output.v"}, "fixed": "x"}
    (attempt,) = step["attempts"]
    assert attempt["status"] == "succeeded" and attempt["worker"] == use["worker"]
    assert attempt["started_at"] == step["started_at"]


def test_a_crashing_tool_leaves_its_traceback(
    client: Any, r: redis.Redis, worker: WorkerProcess
) -> None:
    run_id = submit(client, "test_debug_crash", {"depth": 3})
    events = events_until_finished(r, run_id)
    (retrying,) = of(events, "step_retrying", "boom")
    (finished,) = of(events, "step_finished", "boom")
    assert finished["status"] == "failed"
    for event in (retrying, finished):
        tb = event["traceback"]
        assert tb.startswith("Traceback (most recent call last):")
        assert "KeyError: 'missing_key'" in tb
        assert "The above exception was the direct cause of the following exception" in tb
        assert "_crash_across" in tb and "stepstream_test_tools.py" in tb
        assert tb.rstrip().endswith("ValueError: the innermost call gave up")
    step = snapshot_step(client, run_id, "boom")
    assert step["traceback"] == finished["traceback"]
    assert essentials(step["attempts"]) == [(1, "failed", "retry"), (2, "failed", None)]
    assert step["attempts"][0]["message"] == "ValueError: the innermost call gave up"


def test_a_huge_traceback_keeps_its_head_and_its_raise_site(
    client: Any, r: redis.Redis, worker: WorkerProcess
) -> None:
    run_id = submit(client, "test_debug_crash", {"depth": 400})
    (finished,) = of(events_until_finished(r, run_id), "step_finished", "boom")
    tb = finished["traceback"]
    assert len(tb) <= MAX_TRACEBACK_CHARS
    assert tb.startswith("Traceback (most recent call last):")
    assert "characters left out" in tb
    assert tb.rstrip().endswith("ValueError: the innermost call gave up")
    assert snapshot_step(client, run_id, "boom")["traceback"] == tb


def test_retries_are_in_the_history_without_a_traceback_for_a_declared_failure(
    client: Any, r: redis.Redis, worker: WorkerProcess, tmp_path: Path
) -> None:
    counter = str(tmp_path / "count")
    run_id = submit(client, "test_flaky_retry", {"counter_file": counter, "fail_times": 1})
    events = events_until_finished(r, run_id)
    assert events[-1]["status"] == "succeeded"
    (retrying,) = of(events, "step_retrying", "flaky")
    assert "traceback" not in retrying  # a ToolFailure: its message says it all
    step = snapshot_step(client, run_id, "flaky")
    assert essentials(step["attempts"]) == [(1, "failed", "retry"), (2, "succeeded", None)]
    assert step["attempts"][0]["delay_s"] == 0.2 and step["attempts"][0]["message"] == (
        "attempt 1 failed"
    )
    assert step["traceback"] is None


@pytest.mark.slow
def test_a_takeover_is_in_the_history(client: Any, r: redis.Redis, worker: WorkerProcess) -> None:
    run_id = submit(client, "test_takeover", {})
    logged = wait_for_event(
        r,
        run_id,
        lambda e: e["type"] == "step_log" and e["step"] == "nap",
        what="the nap step's pid",
    )
    os.kill(int(logged[-1]["message"].split()[-1]), signal.SIGKILL)  # the prefork child
    events = events_until_finished(r, run_id, timeout=60)
    assert events[-1]["status"] == "succeeded"
    step = snapshot_step(client, run_id, "nap")
    assert essentials(step["attempts"]) == [
        (1, "interrupted", "worker_lost"),
        (2, "succeeded", None),
    ]
    lost = step["attempts"][0]
    assert lost["worker"].startswith("w1@") and lost["finished_at"] and lost["duration_ms"] > 0
    (resumed,) = [e for e in events if e["type"] == "run_resumed"]
    assert step["attempts"][1]["worker"] == resumed["worker"]


# -- Celery's view: what Flower shows ------------------------------------------------


class TaskEvents:
    """Celery's task events on the broker, read into an `events.State` as Flower does."""

    def __init__(self, settings: Settings) -> None:
        self.app = create_celery_app(settings)
        self.state = self.app.events.State()
        self._connection = self.app.connection()
        self._receiver = self.app.events.Receiver(
            self._connection, handlers={"*": self.state.event}
        )
        self._thread = threading.Thread(target=self._capture, daemon=True)
        self._thread.start()

    def _capture(self) -> None:
        self._receiver.capture(limit=None, timeout=None, wakeup=False)

    def tasks_of(self, run_id: str) -> list[Any]:
        """The run_step tasks received for the run, by the labels they carry."""
        found = []
        for task in list(self.state.tasks.values()):
            if task.name == "stepstream.run_step" and task.kwargs:
                label = ast.literal_eval(task.kwargs)
                if label.get("run_id") == run_id:
                    found.append(task)
        return found

    def close(self) -> None:
        self._receiver.should_stop = True
        self._thread.join(timeout=10)
        self._connection.release()


@pytest.fixture
def task_events(settings: Settings, worker: WorkerProcess) -> Iterator[TaskEvents]:
    events = TaskEvents(settings)
    # Subscribed once the worker's heartbeat (every 2 s) comes through.
    wait_for(lambda: any(w.alive for w in events.state.workers.values()), what="a worker event")
    yield events
    events.close()


def test_flower_shows_a_failed_step_as_failure_and_labels_each_task(
    client: Any, r: redis.Redis, worker: WorkerProcess, task_events: TaskEvents
) -> None:
    failing = submit(client, "test_always_fails", {})
    passing = submit(client, "test_debug_inputs", {"value": 1})
    assert events_until_finished(r, failing)[-1]["status"] == "failed"
    assert events_until_finished(r, passing)[-1]["status"] == "succeeded"

    def settled(run_id: str, count: int) -> list[Any]:
        tasks = task_events.tasks_of(run_id)
        done = [t for t in tasks if t.state in ("SUCCESS", "FAILURE")]
        return done if len(done) == count else []

    doomed = wait_for(lambda: settled(failing, 2), what="the failing run's two tasks")
    assert [t.state for t in doomed] == ["FAILURE", "FAILURE"]  # one per attempt
    assert all("AttemptFailed" in t.exception for t in doomed)
    fine = wait_for(lambda: settled(passing, 2), what="the passing run's two tasks")
    assert [t.state for t in fine] == ["SUCCESS", "SUCCESS"]
    labels = sorted(
        (label["scenario_id"], label["step"], label["attempt"])
        for label in (ast.literal_eval(t.kwargs) for t in doomed + fine)
    )
    assert labels == [
        ("test_always_fails", "doomed", 1),
        ("test_always_fails", "doomed", 2),
        ("test_debug_inputs", "make", 1),
        ("test_debug_inputs", "use", 1),
    ]
    # Expected: logged on one line, without a traceback.
    wait_for(lambda: "raised expected: AttemptFailed" in worker.log(), what="the log line")
    assert "worker.steps.AttemptFailed:" not in worker.log()
