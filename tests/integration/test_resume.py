"""Resuming a stream with the last id seen: every later event once, in order."""

from __future__ import annotations

from clients import sse_events, submit, ws_events
from conftest import LiveServer, WorkerProcess


def test_ws_resume_mid_run_gets_the_rest_exactly_once(
    live_server: LiveServer, worker: WorkerProcess
) -> None:
    run = submit(live_server.url, "test_slow_progress", {"seconds": 1.5})
    head, code = ws_events(live_server.ws_url, run["run_id"], stop_after=5)
    assert len(head) == 5 and code is None  # we hung up, the run goes on
    tail, code = ws_events(live_server.ws_url, run["run_id"], after=head[-1]["id"])
    assert code == 1000
    events = head + tail
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["type"] == "run_finished"
    assert len([e for e in events if e["type"] == "step_progress"]) == 15


def test_sse_resume_with_last_event_id_and_with_after(
    live_server: LiveServer, worker: WorkerProcess
) -> None:
    run = submit(live_server.url, "test_slow_progress", {"seconds": 1.0})
    head = sse_events(live_server.url, run["run_id"], stop_after=4)
    middle = sse_events(live_server.url, run["run_id"], last_event_id=head[-1]["id"], stop_after=4)
    tail = sse_events(live_server.url, run["run_id"], after=middle[-1]["id"])
    events = head + middle + tail
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["type"] == "run_finished"
    # The whole stream, replayed afresh, is the same sequence.
    assert sse_events(live_server.url, run["run_id"], after="0") == events
