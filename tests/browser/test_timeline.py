"""The run page's timeline tab and its event log filters, in a real headless Chromium
against a real server and worker (and, for what a test run cannot easily provoke, a
lost worker, fed the module events by hand)."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from clients import submit
from conftest import LiveServer, WorkerProcess, events_until_finished

#: A real Chromium: left out of `make test-fast`.
pytestmark = pytest.mark.slow


def run_status(page: Any, status: str) -> None:
    page.locator(f'#run-status [data-status="{status}"]').wait_for()


def open_timeline(page: Any) -> Any:
    page.locator('[role=tab][data-tab="timeline"]').click()
    timeline = page.locator("#timeline")
    timeline.wait_for()
    return timeline


def row(page: Any, step: str) -> Any:
    return page.locator(f'#timeline .tl-row[data-step="{step}"]')


def shown(page: Any) -> list[dict[str, str]]:
    """The event log's visible lines: their type, step and time text."""
    return list(
        page.locator("#event-log li:not([hidden])").evaluate_all(
            """items => items.map(li => ({
                type: li.dataset.type, step: li.dataset.step || '',
                time: li.querySelector('time').textContent,
                title: li.querySelector('time').title,
            }))"""
        )
    )


def test_a_running_step_grows_on_the_timeline_until_it_ends(
    live_server: LiveServer, worker: WorkerProcess, page: Any
) -> None:
    run = submit(live_server.url, "test_cancellable", {"seconds": 30})
    page.goto(f"{live_server.url}/runs/{run['run_id']}")
    open_timeline(page)
    bar = row(page, "long").locator('.tl-bar[data-status="running"]')
    bar.wait_for()
    # The running attempt grows live, by the ticker, with no event to move it.
    first = int(bar.get_attribute("data-ms"))
    page.wait_for_function(
        """([el, before]) => Number(el.dataset.ms) >= before + 600""",
        arg=[bar.element_handle(), first],
    )
    assert bar.get_attribute("data-attempt") == "1"
    # The run itself: its queue time, then its running bar up to now.
    assert page.locator('#timeline .tl-run-row .tl-bar[data-status="running"]').count() == 1
    # The step that waits for it has no bar yet.
    assert row(page, "after").locator(".tl-bar").count() == 0

    page.locator("#cancel").click()
    run_status(page, "cancelled")
    row(page, "long").locator('.tl-bar[data-status="cancelled"]').wait_for()
    assert row(page, "long").locator('.tl-bar[data-status="running"]').count() == 0
    # Never started: a mark where it was given up, no bar.
    assert row(page, "after").locator(".tl-bar").count() == 0
    row(page, "after").locator(".tl-mark:not([hidden])").wait_for()


def test_a_finished_run_opened_afterwards_shows_every_attempt_and_its_backoff(
    live_server: LiveServer, worker: WorkerProcess, page: Any, r: redis.Redis, tmp_path: Path
) -> None:
    run = submit(
        live_server.url,
        "test_flaky_retry",
        {"counter_file": str(tmp_path / "count"), "fail_times": 2},
    )
    events = events_until_finished(r, run["run_id"])
    page.goto(f"{live_server.url}/runs/{run['run_id']}")
    run_status(page, "succeeded")
    open_timeline(page)

    flaky = row(page, "flaky")
    flaky.locator('.tl-bar[data-status="succeeded"]').wait_for()
    assert page.locator("#timeline .tl-row[data-step]").count() == 1
    attempts = flaky.locator(".tl-bar").evaluate_all(
        "bars => bars.map(b => [b.dataset.attempt, b.dataset.status])"
    )
    assert attempts == [["1", "retried"], ["2", "retried"], ["3", "succeeded"]]
    # Two backoffs, 0.2 s then 0.4 s, drawn between the attempts that they separate.
    gaps = flaky.locator(".tl-backoff:not([hidden])")
    assert gaps.count() == 2
    assert "0.2 s" in gaps.nth(0).get_attribute("title")
    assert "0.4 s" in gaps.nth(1).get_attribute("title")
    boxes = [flaky.locator(f'.tl-bar[data-attempt="{n}"]').bounding_box() for n in (1, 2, 3)]
    gap_boxes = [gaps.nth(i).bounding_box() for i in (0, 1)]
    for i in (0, 1):
        assert boxes[i]["x"] <= gap_boxes[i]["x"] + 1
        assert gap_boxes[i]["x"] + gap_boxes[i]["width"] <= boxes[i + 1]["x"] + 1
    # The tooltip tells the exact times and the duration.
    title = flaky.locator('.tl-bar[data-attempt="3"]').get_attribute("title")
    assert re.search(r"started \d\d:\d\d:\d\d\.\d{3} \(\+\d+\.\d\d s\)", title), title
    assert "duration" in title and "succeeded" in title
    # The axis has ticks in a unit fit for a run of about a second.
    ticks = page.locator("#timeline .tl-tick").all_inner_texts()
    assert ticks[0] == "0" and 2 <= len(ticks) <= 11, ticks
    assert all(re.fullmatch(r"\d+ ms|\d+(\.\d+)? s", t) for t in ticks[1:]), ticks
    # A finished run's axis ends with it, not at the time the page was opened.
    first, last = (datetime.fromisoformat(e["ts"]) for e in (events[0], events[-1]))
    span = page.locator("#timeline .tl-axis").get_attribute("data-span")
    assert abs(int(span) - (last - first).total_seconds() * 1000) <= 1  # ms, as Date.parse


LOST_RUN_EVENTS = """
(async () => {
  const { createTimeline } = await import('/static/timeline.js');
  const names = Array.from({ length: 50 }, (_, i) => `s${String(i).padStart(2, '0')}`);
  const steps = new Map(names.map((name, i) => [name, {
    name, tool: 'echo', needs: i ? [names[i - 1]] : [], status: 'pending', attempt: 0,
  }]));
  const timeline = createTimeline();
  document.body.replaceChildren(timeline.element);
  const t0 = Date.parse('2024-05-01T10:00:00Z');
  let seq = 0;
  const at = (ms) => new Date(t0 + ms).toISOString();
  const send = (ms, type, extra = {}) => {
    const event = { schema_version: 1, run_id: 'r', seq: ++seq, ts: at(ms), type, ...extra };
    if (event.step) {
      const step = steps.get(event.step);
      if (type === 'step_started') step.status = 'running';
      if (type === 'step_finished') step.status = event.status;
    }
    timeline.update(event, steps);
  };
  send(0, 'run_queued', { scenario_id: 'x', input: {} });
  send(100, 'run_started', { scenario_id: 'x', worker: 'w1@a' });
  // s00 is lost with w1 and taken over by w2 as attempt 2.
  send(150, 'step_started', { step: 's00', attempt: 1, tool: 'echo', worker: 'w1@a' });
  send(5150, 'run_resumed', { worker: 'w2@b', reason: 'worker_lost' });
  send(5160, 'step_started', { step: 's00', attempt: 2, tool: 'echo', worker: 'w2@b' });
  send(6000, 'step_finished', { step: 's00', attempt: 2, status: 'succeeded', duration_ms: 840 });
  let t = 6000;
  for (const name of names.slice(1)) {
    send(t + 20, 'step_started', { step: name, attempt: 1, tool: 'echo', worker: 'w2@b' });
    send(t + 60, 'step_finished', { step: name, attempt: 1, status: 'succeeded', duration_ms: 40 });
    t += 60;
  }
  send(t + 10, 'run_finished', { status: 'succeeded', finished_at: at(t + 10), message: '' });
})()
"""


def test_lost_attempts_are_marked_and_fifty_steps_scroll_instead_of_squashing(
    live_server: LiveServer, page: Any
) -> None:
    page.goto(f"{live_server.url}/")
    page.evaluate(LOST_RUN_EVENTS)
    first = row(page, "s00")
    first.locator('.tl-bar[data-status="succeeded"]').wait_for()
    lost = first.locator('.tl-bar[data-attempt="1"]')
    assert lost.get_attribute("data-status") == "lost"
    assert lost.get_attribute("data-lost") == "worker_lost"
    title = lost.get_attribute("title")
    assert "worker w1@a" in title and "taken over by w2@b" in title, title
    # The lost attempt ends where the run was taken over, the next begins right after.
    ends = lost.bounding_box()
    again = first.locator('.tl-bar[data-attempt="2"]').bounding_box()
    assert ends["x"] + ends["width"] <= again["x"] + 1
    assert "worker w2@b" in first.locator('.tl-bar[data-attempt="2"]').get_attribute("title")
    # A step waits for the one before it: its wait starts at that one's end.
    wait = row(page, "s01").locator(".tl-wait:not([hidden])")
    assert "waited 20 ms" in wait.get_attribute("title")

    rows = page.locator("#timeline .tl-row[data-step]")
    assert rows.count() == 50
    heights = rows.evaluate_all("rs => rs.map(r => r.getBoundingClientRect().height)")
    assert min(heights) >= 20, heights
    scroller = page.locator("#timeline .tl-scroll")
    assert scroller.evaluate("el => el.scrollHeight > el.clientHeight + 100")
    # The axis stays in view while the rows scroll under it.
    scroller.evaluate("el => { el.scrollTop = el.scrollHeight; }")
    head = page.locator("#timeline .tl-head").bounding_box()
    assert abs(head["y"] - scroller.bounding_box()["y"]) < 2
    ticks = page.locator("#timeline .tl-tick").all_inner_texts()
    assert ticks[0] == "0" and all(t.endswith(" s") for t in ticks[1:]), ticks


def test_the_event_log_filters_by_type_step_and_progress_with_relative_times(
    live_server: LiveServer, worker: WorkerProcess, page: Any, r: redis.Redis
) -> None:
    run = submit(live_server.url, "test_slow_progress", {"seconds": 1.5})
    page.goto(f"{live_server.url}/runs/{run['run_id']}")
    # Chosen while the run runs: lines still to come obey it.
    page.locator("#log-hide-progress").check()
    run_status(page, "succeeded")
    stored = httpx.get(
        f"{live_server.url}/api/runs/{run['run_id']}/events",
        headers={"Accept": "application/json"},
        params={"limit": 1000},
    ).json()["events"]
    total = len(stored)
    progress = sum(1 for e in stored if e["type"] == "step_progress")
    assert progress >= 3
    assert page.locator('#event-log li[data-type="step_progress"]').count() == progress
    lines = shown(page)
    assert not [x for x in lines if x["type"] == "step_progress"]
    assert len(lines) == total - progress
    count = page.locator("#log-count")
    assert count.inner_text() == f"showing {total - progress} of {total} events"

    # Relative times from the run's first event; the absolute one on hover.
    assert lines[0]["type"] == "run_queued" and lines[0]["time"] == "+0.00 s"
    seconds = [float(re.fullmatch(r"\+(\d+\.\d\d) s", x["time"])[1]) for x in lines]  # type: ignore[index]
    assert seconds == sorted(seconds) and seconds[-1] > 1.0
    assert stored[0]["ts"] in lines[0]["title"]
    assert re.match(r"\d\d:\d\d:\d\d\.\d{3} · ", lines[0]["title"])

    page.locator("#log-hide-progress").uncheck()
    assert len(shown(page)) == total
    assert count.inner_text() == f"showing all {total} events"

    page.locator("#log-type").select_option("step_started")
    assert [x["step"] for x in shown(page)] == ["first", "long", "last"]
    assert count.inner_text() == f"showing 3 of {total} events"
    # A type chosen overrides the progress switch, which then has nothing to say.
    page.locator("#log-type").select_option("step_progress")
    assert len(shown(page)) == progress
    assert page.locator("#log-hide-progress").is_disabled()

    page.locator("#log-type").select_option("")
    page.locator("#log-step").select_option("long")
    mine = [e for e in stored if e.get("step") == "long"]
    assert [x["type"] for x in shown(page)] == [e["type"] for e in mine]
    page.locator("#log-step").select_option(label="The run only")
    assert {x["type"] for x in shown(page)} == {"run_queued", "run_started", "run_finished"}
    # The options count what they would show.
    assert page.locator('#log-step option[value="long"]').inner_text() == f"long ({len(mine)})"
