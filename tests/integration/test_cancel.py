"""Cancellation (`POST /api/runs/<id>/cancel`) against real workers."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from clients import submit, ws_connection, ws_events, ws_read_rest, ws_read_until
from conftest import LiveServer, WorkerProcess, serve

from client.streams import WSStream


def follow_until(
    server: LiveServer, run_id: str, predicate: Callable[[dict[str, Any]], bool]
) -> tuple[WSStream, list[dict[str, Any]]]:
    """Open a WebSocket on the run and read until `predicate(event)`; returns the socket."""
    conn = ws_connection(server.url, run_id)
    return conn, ws_read_until(conn, predicate)


def read_rest(conn: WSStream) -> tuple[list[dict[str, Any]], int | None]:
    with conn:
        return ws_read_rest(conn)


def cancel(server: LiveServer, run_id: str) -> httpx.Response:
    return httpx.post(f"{server.url}/api/runs/{run_id}/cancel", timeout=10)


def test_cancel_stops_a_long_step_and_cancels_what_waits(
    live_server: LiveServer, worker: WorkerProcess
) -> None:
    run = submit(live_server.url, "test_cancellable", {"seconds": 30})
    conn, head = follow_until(live_server, run["run_id"], lambda e: e["type"] == "step_progress")
    asked = time.monotonic()
    response = cancel(live_server, run["run_id"])
    assert response.status_code == 202
    assert response.json()["run_id"] == run["run_id"]
    tail, code = read_rest(conn)
    # The sleep notices ctx.cancelled within its polling interval: well under the grace.
    assert time.monotonic() - asked < 3
    assert code == 1000
    events = head + tail
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    finished = {e["step"]: e for e in events if e["type"] == "step_finished"}
    assert finished["long"]["status"] == "cancelled"
    assert finished["long"]["message"].startswith("cancelled after sleeping")
    assert finished["long"]["duration_ms"] > 0
    assert finished["after"]["status"] == "cancelled"
    assert finished["after"]["started_at"] is None and finished["after"]["attempt"] == 0
    assert "after" not in [e["step"] for e in events if e["type"] == "step_started"]
    final = [e for e in events if e["type"] == "run_finished"]
    assert len(final) == 1 and final[0] == events[-1]
    assert final[0]["status"] == "cancelled" and final[0]["reason"] == "cancelled"

    snap = httpx.get(f"{live_server.url}/api/runs/{run['run_id']}").json()
    assert snap["status"] == "cancelled" and snap["last_event_id"] == events[-1]["id"]
    assert [s["status"] for s in snap["steps"]] == ["cancelled", "cancelled"]
    # A finished run cannot be cancelled again, and trying changes nothing.
    again = cancel(live_server, run["run_id"])
    assert again.status_code == 409 and again.json()["error"]["code"] == "conflict"
    assert ws_events(live_server.ws_url, run["run_id"])[0] == events


def test_cancel_right_after_submit_ends_the_run_cancelled(
    live_server: LiveServer, worker: WorkerProcess
) -> None:
    """Whether the worker has started the run yet or not, it ends cancelled, once."""
    for _ in range(3):
        run = submit(live_server.url, "test_cancellable", {"seconds": 30})
        assert cancel(live_server, run["run_id"]).status_code == 202
        events, code = ws_events(live_server.ws_url, run["run_id"])
        assert code == 1000
        assert [e["type"] for e in events].count("run_finished") == 1
        assert events[-1]["status"] == "cancelled"
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))


def test_cancelling_twice_is_harmless(live_server: LiveServer, worker: WorkerProcess) -> None:
    run = submit(live_server.url, "test_cancellable", {"seconds": 30})
    conn, head = follow_until(live_server, run["run_id"], lambda e: e["type"] == "step_started")
    first, second = cancel(live_server, run["run_id"]), cancel(live_server, run["run_id"])
    assert first.status_code == 202
    assert second.status_code in (202, 409)  # 409 only if the run already ended
    tail, _ = read_rest(conn)
    events = head + tail
    assert [e["type"] for e in events].count("run_finished") == 1
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))


def test_cancel_unknown_run_is_404(client: Any) -> None:
    response = client.post("/api/runs/no-such-run/cancel")
    assert response.status_code == 404
    assert response.json["error"]["code"] == "not_found"


@pytest.mark.slow
def test_a_step_that_ignores_cancellation_is_terminated_after_the_grace(
    app_factory: Callable[..., Any], worker: WorkerProcess, r: Any
) -> None:
    app = app_factory(cancel_grace_s=1.0)
    with serve(app) as server:
        run = submit(server.url, "test_stubborn_cancel")
        started: set[str] = set()

        def both_started(event: dict[str, Any]) -> bool:
            if event["type"] == "step_started":
                started.add(event["step"])
            return started == {"deaf", "polite"}

        conn, head = follow_until(server, run["run_id"], both_started)
        asked = time.monotonic()
        assert cancel(server, run["run_id"]).status_code == 202
        tail, code = read_rest(conn)
        assert code == 1000
        assert time.monotonic() - asked < 10
        events = head + tail
        finished = {e["step"]: e for e in events if e["type"] == "step_finished"}
        assert finished["polite"]["status"] == "cancelled"
        assert finished["deaf"]["status"] == "cancelled"
        assert "did not stop within the cancellation grace" in finished["deaf"]["message"]
        assert finished["join"]["status"] == "cancelled"
        assert events[-1]["type"] == "run_finished" and events[-1]["status"] == "cancelled"
        assert [e["type"] for e in events].count("run_finished") == 1
        # The terminated step's slot is free again: a new run completes.
        after = submit(server.url, "test_continue")
        more, _ = ws_events(server.ws_url, after["run_id"])
        assert more[-1]["status"] == "succeeded"
