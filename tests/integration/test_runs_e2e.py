"""Each example scenario, submitted over HTTP and followed over WebSocket and SSE."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from clients import sse_events, submit, ws_events
from conftest import LiveServer, WorkerProcess


def check_stream(events: list[dict[str, Any]], run_id: str) -> None:
    """The stream invariants: seq 1..n, one run_finished, last, ids increasing."""
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert all(e["run_id"] == run_id and e["schema_version"] == 1 for e in events)
    assert [e["type"] for e in events].count("run_finished") == 1
    assert events[-1]["type"] == "run_finished"
    assert events[0]["type"] == "run_queued"
    assert events[1]["type"] == "run_started"
    ids = [tuple(map(int, e["id"].split("-"))) for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    timestamps = [e["ts"] for e in events]
    assert timestamps == sorted(timestamps)


def step_events(events: list[dict[str, Any]], step: str) -> list[str]:
    return [e["type"] for e in events if e.get("step") == step]


def snapshot(server: LiveServer, run_id: str) -> dict[str, Any]:
    response = httpx.get(f"{server.url}/api/runs/{run_id}")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


@pytest.mark.parametrize("transport", ["ws", "sse"])
def test_sequential_scenario_streams_every_step_in_order(
    live_server: LiveServer, worker: WorkerProcess, transport: str
) -> None:
    run = submit(live_server.url, "hello_sequence", {"name": "Ada"})
    assert run["status"] == "queued"
    assert run["input"] == {"name": "Ada", "greeting": "Hello"}  # default filled
    if transport == "ws":
        events, code = ws_events(live_server.ws_url, run["run_id"])
        assert code == 1000
    else:
        events = sse_events(live_server.url, run["run_id"])
    check_stream(events, run["run_id"])

    steps = [e["step"] for e in events if e["type"] == "step_started"]
    assert steps == ["greet", "pause", "compose"]
    # Each step finishes before the next starts: the scenario is sequential.
    finished_at = {e["step"]: e["seq"] for e in events if e["type"] == "step_finished"}
    started_at = {e["step"]: e["seq"] for e in events if e["type"] == "step_started"}
    assert finished_at["greet"] < started_at["pause"] < finished_at["pause"]
    assert finished_at["pause"] < started_at["compose"]
    progress = [e for e in events if e["type"] == "step_progress"]
    assert progress and all(e["step"] == "pause" for e in progress)
    assert [p["progress"] for p in progress] == sorted(p["progress"] for p in progress)
    assert progress[-1]["progress"] == 1.0

    final = events[-1]
    assert final["status"] == "succeeded" and "reason" not in final
    snap = snapshot(live_server, run["run_id"])
    assert snap["status"] == "succeeded"
    assert snap["last_event_id"] == final["id"]
    assert snap["finished_at"] == final["finished_at"]
    assert [s["status"] for s in snap["steps"]] == ["succeeded"] * 3
    assert snap["steps"][0]["output"] == {"name": "Ada"}
    compose = snap["steps"][2]
    done = next(e for e in events if e["type"] == "step_finished" and e["step"] == "compose")
    assert done["output"] == compose["output"]
    assert done["duration_ms"] == compose["duration_ms"] and compose["attempt"] == 1


def test_fan_out_join_runs_branches_then_join(
    live_server: LiveServer, worker: WorkerProcess
) -> None:
    run = submit(live_server.url, "fan_out_join", {"label": "x"})
    events, code = ws_events(live_server.ws_url, run["run_id"])
    assert code == 1000
    check_stream(events, run["run_id"])
    seq = {(e["type"], e.get("step")): e["seq"] for e in events}
    branches = ["quick", "medium", "slow"]
    for branch in branches:
        assert seq[("step_finished", "prepare")] < seq[("step_started", branch)]
        assert seq[("step_finished", branch)] < seq[("step_started", "join")]
    assert events[-1]["status"] == "succeeded"
    snap = snapshot(live_server, run["run_id"])
    join = snap["steps"][-1]
    assert join["name"] == "join" and join["status"] == "succeeded"
    assert join["output"]["request"] == {"label": "x"}


def test_failing_step_fails_run_and_skips_dependant(
    live_server: LiveServer, worker: WorkerProcess
) -> None:
    run = submit(live_server.url, "failing_step", {"reason": "boom"})
    events = sse_events(live_server.url, run["run_id"])
    check_stream(events, run["run_id"])
    finished = {e["step"]: e for e in events if e["type"] == "step_finished"}
    assert finished["prepare"]["status"] == "succeeded"
    assert finished["explode"]["status"] == "failed"
    assert finished["explode"]["message"] == "boom"
    assert finished["never_runs"]["status"] == "skipped"
    assert "never_runs" not in [e["step"] for e in events if e["type"] == "step_started"]
    final = events[-1]
    assert final["status"] == "failed" and final["reason"] == "step_failed"
    assert "explode" in final["message"] and "boom" in final["message"]
    snap = snapshot(live_server, run["run_id"])
    assert [s["status"] for s in snap["steps"]] == ["succeeded", "failed", "skipped"]
    assert snap["message"] == final["message"]


def test_continue_on_error_passes_null_output(
    live_server: LiveServer, worker: WorkerProcess
) -> None:
    run = submit(live_server.url, "test_continue")
    events, _ = ws_events(live_server.ws_url, run["run_id"])
    check_stream(events, run["run_id"])
    assert events[-1]["status"] == "succeeded"
    snap = snapshot(live_server, run["run_id"])
    assert snap["steps"][0]["status"] == "failed"
    assert snap["steps"][1]["output"] == {"previous": None}


def test_connecting_to_finished_run_replays_then_ends(
    live_server: LiveServer, worker: WorkerProcess
) -> None:
    run = submit(live_server.url, "hello_sequence", {"name": "Eve"})
    first, _ = ws_events(live_server.ws_url, run["run_id"])
    again, code = ws_events(live_server.ws_url, run["run_id"])
    assert code == 1000 and again == first
    assert sse_events(live_server.url, run["run_id"]) == first
    # From the last id of a finished run: nothing more, and the stream still ends.
    rest, code = ws_events(live_server.ws_url, run["run_id"], after=first[-1]["id"])
    assert rest == [] and code == 1000
    assert sse_events(live_server.url, run["run_id"], after=first[-1]["id"]) == []


def test_events_json_page(live_server: LiveServer, worker: WorkerProcess) -> None:
    run = submit(live_server.url, "hello_sequence", {"name": "Pat"})
    events, _ = ws_events(live_server.ws_url, run["run_id"])
    url = f"{live_server.url}/api/runs/{run['run_id']}/events"
    headers = {"Accept": "application/json"}
    page = httpx.get(url, params={"limit": 3}, headers=headers).json()
    assert page["events"] == events[:3] and page["next_after"] == events[2]["id"]
    rest = httpx.get(
        url, params={"after": page["next_after"], "limit": 1000}, headers=headers
    ).json()
    assert rest["events"] == events[3:]
    empty = httpx.get(url, params={"after": events[-1]["id"]}, headers=headers).json()
    assert empty == {"events": [], "next_after": None}
