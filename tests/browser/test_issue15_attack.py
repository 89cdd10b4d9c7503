"""The run page, the lists and the router against what a bad day sends them: runs of
hundreds of steps and thousands of events, hostile text, junk links. Most runs here are
made up: the page's HTTP answers and its WebSocket are served by the test (Playwright
routes), so a run can say anything a server could."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from conftest import BROWSER_TIMEOUT_MS, LiveServer

T0 = 1_700_000_000_000

#: A real Chromium: left out of `make test-fast`.
pytestmark = pytest.mark.slow


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="microseconds")


class FakeRun:
    """A run the test makes up: its snapshot and its events, as the server would send."""

    def __init__(self, steps: list[dict[str, Any]], **snapshot: Any) -> None:
        self.run_id = str(uuid.uuid4())
        self.events: list[dict[str, Any]] = []
        self.snapshot: dict[str, Any] = {
            "run_id": self.run_id,
            "scenario_id": "made_up",
            "status": "running",
            "input": {},
            "created_at": iso(T0),
            "started_at": iso(T0 + 1),
            "finished_at": None,
            "worker": "w1@host",
            "message": "",
            "steps": [
                {"tool": "echo", "needs": [], "status": "pending", "attempt": 0, **s} for s in steps
            ],
            **snapshot,
        }

    def event(self, at_ms: int, type_: str, **fields: Any) -> None:
        seq = len(self.events) + 1
        self.events.append(
            {"schema_version": 1, "type": type_, "run_id": self.run_id, "seq": seq,
             "ts": iso(T0 + at_ms), "id": f"{T0 + at_ms}-{seq}", **fields}
        )  # fmt: skip

    def serve(self, page: Any) -> None:
        """Answer the page's questions about this run, and send its events once."""
        page.route(
            f"**/api/runs/{self.run_id}",
            lambda route: route.fulfill(
                status=200, content_type="application/json", body=json.dumps(self.snapshot)
            ),
        )

        def socket(ws: Any) -> None:
            for event in self.events:
                ws.send(json.dumps(event))

        page.route_web_socket(re.compile(rf"/api/runs/{self.run_id}/ws"), socket)


def fan_out(width: int, ticks: int) -> FakeRun:
    """root, then `width` branches started together, each reporting progress `ticks`
    times, all still running."""
    names = [f"b{i}" for i in range(width)]
    run = FakeRun(
        [
            {"name": "root"},
            *({"name": n, "tool": "sleep", "needs": ["root"]} for n in names),
            {"name": "join", "needs": names},
        ]
    )
    run.event(0, "run_queued", scenario_id="made_up", input={})
    run.event(1, "run_started", scenario_id="made_up", worker="w1@host")
    run.event(2, "step_started", step="root", attempt=1, tool="echo")
    run.event(3, "step_finished", step="root", attempt=1, status="succeeded", output={},
              duration_ms=1, message="")  # fmt: skip
    at = 4
    for n in names:
        run.event(at, "step_started", step=n, attempt=1, tool="sleep")
        at += 1
    for k in range(ticks):
        for n in names:
            run.event(at, "step_progress", step=n, attempt=1, progress=(k + 1) / ticks, message="")
            at += 1
    return run


def applied(page: Any, run: FakeRun, timeout_ms: int = BROWSER_TIMEOUT_MS) -> None:
    page.wait_for_function(
        "n => window.stepstreamRun && window.stepstreamRun.lastSeq >= n",
        arg=len(run.events),
        timeout=timeout_ms,
    )


def test_a_run_of_a_500_wide_fan_out_and_5500_events_opens_in_seconds(
    live_server: LiveServer, page: Any
) -> None:
    # The event log asked the layout where its scroll stood after each line it added:
    # the whole page was laid out again per event, and this run took 70 s to show.
    run = fan_out(500, 10)
    run.serve(page)
    page.goto(f"{live_server.url}/runs/{run.run_id}")
    applied(page, run, timeout_ms=25_000)
    count = page.locator("#log-count")
    count.filter(has_text=f"showing all {len(run.events)} events").wait_for()
    # Still following the newest line, as a log left at its bottom does.
    log = page.locator("#event-log")
    page.wait_for_function(
        "el => el.scrollTop + el.clientHeight >= el.scrollHeight - 4", arg=log.element_handle()
    )
    assert page.locator(".step.more .meta").inner_text() == "495 running"


def test_the_event_log_scrolled_up_stays_where_it_was_as_lines_arrive(
    live_server: LiveServer, page: Any
) -> None:
    run = fan_out(20, 10)
    run.serve(page)
    page.goto(f"{live_server.url}/runs/{run.run_id}")
    applied(page, run)
    log = page.locator("#event-log")
    page.wait_for_function(
        "el => el.scrollHeight > el.clientHeight && el.scrollTop > 0", arg=log.element_handle()
    )
    log.evaluate("el => { el.scrollTop = 0; }")
    page.wait_for_function("el => el.scrollTop === 0", arg=log.element_handle())
    # Another line: the reader who scrolled up is not pulled down to it.
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    page.locator("#log-step").select_option("b3")
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    assert log.evaluate("el => el.scrollTop") == 0


def test_the_timeline_of_500_running_steps_grows_without_freezing_the_page(
    live_server: LiveServer, page: Any
) -> None:
    # Every 250 ms each of the 500 bars was given a new tooltip (times formatted anew),
    # every row laid out, and 500 bars pulsed: the page froze 200 ms of each 250.
    run = fan_out(500, 1)
    run.serve(page)
    page.goto(f"{live_server.url}/runs/{run.run_id}")
    applied(page, run, timeout_ms=25_000)
    page.locator('[role=tab][data-tab="timeline"]').click()
    bar = page.locator('#timeline .tl-row[data-step="b0"] .tl-bar[data-status="running"]')
    bar.wait_for()
    page.evaluate(
        """() => {
            window.longTasks = [];
            new PerformanceObserver(list => {
                for (const e of list.getEntries()) window.longTasks.push(Math.round(e.duration));
            }).observe({entryTypes: ['longtask']});
        }"""
    )
    first = int(bar.get_attribute("data-ms"))
    # Eight ticks of the timeline's clock.
    page.wait_for_function(
        "([el, before]) => Number(el.dataset.ms) >= before + 2000",
        arg=[bar.element_handle(), first],
    )
    long_tasks = page.evaluate("() => window.longTasks")
    assert sum(t > 120 for t in long_tasks) <= 1, long_tasks
    # The tooltip of a running bar still follows it.
    title = bar.get_attribute("title")
    assert title.startswith("b0 · attempt 1: running"), title


HOSTILE = '<img src=x onerror="window.hacked=1">\u202e\u200b😀'


def test_hostile_text_shows_as_text_and_integers_beyond_2_53_stay_exact(
    live_server: LiveServer, page: Any
) -> None:
    # JavaScript numbers stop at 2^53: parsed as such, 2^53 + 1 in a run's input showed
    # as 9007199254740992 and 2^60 + 1 as 1152921504606847000.
    big, bigger = 2**53 + 1, -(2**60 + 1)
    run = FakeRun(
        [{"name": "a", "input": {"x": HOSTILE, "n": {"from": "input.big"}}}],
        input={"big": big, "h": HOSTILE},
    )
    run.event(0, "run_queued", scenario_id="made_up", input={})
    run.event(1, "run_started", scenario_id="made_up", worker=HOSTILE)
    run.event(2, "step_started", step="a", attempt=1, tool="echo")
    run.event(3, "step_log", step="a", attempt=1, message=HOSTILE)
    run.event(4, "step_finished", step="a", attempt=1, status="succeeded", message=HOSTILE,
              duration_ms=1, output={"n": bigger, "f": 1.5, "e": 1e300})  # fmt: skip
    run.snapshot["steps"][0].update(
        traceback=HOSTILE, status="succeeded", resolved_input={"x": HOSTILE, "n": big}
    )
    run.serve(page)
    page.goto(f"{live_server.url}/runs/{run.run_id}")
    applied(page, run)
    assert f'"big": {big},' in page.locator("#run-input").inner_text()
    page.locator('.step[data-step="a"]').click()
    assert HOSTILE in page.locator("#step-traceback").inner_text()
    assert f'"n": {big}' in page.locator("#step-input").inner_text()
    output = page.locator("#step-output").inner_text()
    assert f'"n": {bigger},' in output and '"f": 1.5' in output and '"e": 1e+300' in output
    assert HOSTILE in page.locator("#event-log").inner_text()
    assert page.locator("#detail img, #event-log img, .run-header img").count() == 0
    assert page.evaluate("() => window.hacked") is None


def test_a_run_link_with_a_malformed_escape_says_run_not_found(
    live_server: LiveServer, page: Any
) -> None:
    # decodeURIComponent threw on it: the page stayed blank with a script error.
    page.goto(f"{live_server.url}/runs/%E0%A4%A")
    page.get_by_role("heading", name="Run not found").wait_for()
