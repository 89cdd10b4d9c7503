"""A run page to debug with, in a real Chromium against a real server and worker: the
header (times, queue time, duration, worker, input, result, copy buttons) and the step
panel (the input the tool received, its template, a tool's traceback, the attempts after
a retry and after a takeover)."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from clients import submit
from conftest import BROWSER_TIMEOUT_MS, LiveServer, Stack, WorkerProcess, serve, start_worker

from client.follow import Follower

#: A real Chromium: left out of `make test-fast`.
pytestmark = pytest.mark.slow


def finished(server: LiveServer, run_id: str) -> dict[str, Any]:
    """The run's last event, once it has come (the run's own stream, followed)."""
    events = list(Follower(server.url, run_id, "sse", read_timeout=60))
    return events[-1]


def open_run(page: Any, server: LiveServer, run_id: str, status: str) -> None:
    page.goto(f"{server.url}/runs/{run_id}")
    page.locator(f'#run-status [data-status="{status}"]').wait_for()


def fact(page: Any, name: str) -> str:
    return str(page.locator(f'[data-fact="{name}"]').inner_text())


def open_step(page: Any, step: str) -> Any:
    page.locator(f'.step[data-step="{step}"]').click()
    return page.locator("#detail")


def test_the_header_shows_times_worker_input_and_result(
    live_server: LiveServer, worker: WorkerProcess, page: Any
) -> None:
    run = submit(live_server.url, "hello_sequence", {"name": "Ada"})
    assert finished(live_server, run["run_id"])["status"] == "succeeded"
    snapshot = httpx.get(f"{live_server.url}/api/runs/{run['run_id']}").json()
    open_run(page, live_server, run["run_id"], "succeeded")

    for name in ("created", "started", "finished"):
        assert fact(page, name) and fact(page, name) != "not yet", name
    assert fact(page, "queue-time").endswith(("ms", " s")), fact(page, "queue-time")
    assert fact(page, "duration").endswith(("ms", " s")), fact(page, "duration")
    assert snapshot["worker"] and snapshot["worker"] in fact(page, "worker")
    assert '"name": "Ada"' in page.locator("#run-input").inner_text()
    # The result is what the last step returned, in full.
    result = page.locator("#run-output").inner_text()
    assert "compose" in result and '"to": "Ada"' in result


def test_copy_buttons_put_the_id_and_the_link_on_the_clipboard(
    live_server: LiveServer, worker: WorkerProcess, browser: Any
) -> None:
    run = submit(live_server.url, "hello_sequence", {"name": "Ada"})
    context = browser.new_context()
    context.set_default_timeout(BROWSER_TIMEOUT_MS)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server.url)
    page = context.new_page()
    try:
        page.goto(f"{live_server.url}/runs/{run['run_id']}")
        page.locator("#copy-id").click()
        page.locator("#copy-id", has_text="Copied").wait_for()
        assert page.evaluate("navigator.clipboard.readText()") == run["run_id"]
        page.locator("#copy-link").click()
        page.locator("#copy-link", has_text="Copied").wait_for()
        link = page.evaluate("navigator.clipboard.readText()")
        assert link == f"{live_server.url}/runs/{run['run_id']}"
    finally:
        context.close()


def test_the_step_panel_shows_the_values_received_and_the_template_on_a_toggle(
    live_server: LiveServer, worker: WorkerProcess, page: Any
) -> None:
    run = submit(live_server.url, "hello_sequence", {"name": "Ada"})
    assert finished(live_server, run["run_id"])["status"] == "succeeded"
    open_run(page, live_server, run["run_id"], "succeeded")
    detail = open_step(page, "compose")
    received = detail.locator("#step-input").inner_text()
    assert '"to": "Ada"' in received and "from" not in received
    detail.locator("#input-toggle").click()
    template = detail.locator("#step-input-template").inner_text()
    assert "steps.greet.output.name" in template
    detail.locator("#input-toggle").click()
    detail.locator("#step-input").wait_for()
    page.keyboard.press("Escape")
    detail.wait_for(state="hidden")
    open_step(page, "compose")
    # The timeline's rows open the same panel.
    page.get_by_role("tab", name="Timeline").click()
    page.locator('#timeline .tl-row[data-step="greet"]').click()
    page.locator("#detail h2", has_text="greet").wait_for()
    assert '"name": "Ada"' in detail.locator("#step-input").inner_text()


def test_a_tool_exception_shows_its_traceback_and_every_attempt(
    live_server: LiveServer, worker: WorkerProcess, page: Any
) -> None:
    run = submit(live_server.url, "test_debug_crash", {"depth": 3})
    assert finished(live_server, run["run_id"])["status"] == "failed"
    open_run(page, live_server, run["run_id"], "failed")
    detail = open_step(page, "boom")
    traceback = detail.locator("#step-traceback").inner_text()
    # The whole chain, from the first exception to the raise the step died of.
    assert traceback.startswith("Traceback"), traceback
    assert "KeyError" in traceback and "ValueError: the innermost call gave up" in traceback
    rows = detail.locator("#attempts tbody tr")
    rows.nth(1).wait_for()
    assert rows.count() == 2
    first, second = rows.nth(0), rows.nth(1)
    assert first.get_attribute("data-reason") == "retry"
    assert "retried" in first.inner_text() and "the innermost call gave up" in first.inner_text()
    assert second.get_attribute("data-status") == "failed"
    assert worker.name in first.locator(".worker").inner_text()


def test_an_attempt_lost_with_its_worker_is_shown_as_taken_over(
    live_server: LiveServer, worker: WorkerProcess, page: Any
) -> None:
    run = submit(live_server.url, "test_takeover")
    events = []
    for event in Follower(live_server.url, run["run_id"], "ws", read_timeout=60):
        events.append(event)
        if event["type"] == "step_log" and event["step"] == "nap" and event["attempt"] == 1:
            os.kill(int(event["message"].split()[-1]), signal.SIGKILL)  # the prefork child
    assert events[-1]["status"] == "succeeded"
    open_run(page, live_server, run["run_id"], "succeeded")
    rows = open_step(page, "nap").locator("#attempts tbody tr")
    rows.nth(1).wait_for()
    assert rows.nth(0).get_attribute("data-reason") == "worker_lost"
    assert "taken over" in rows.nth(0).inner_text()
    assert rows.nth(1).get_attribute("data-status") == "succeeded"


def test_a_queued_run_says_why_it_waits_until_a_worker_takes_it(
    isolated_stack: Stack,
    app_factory: Callable[..., Any],
    page: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    with serve(app_factory(**isolated_stack.urls)) as server:
        run = submit(server.url, "hello_sequence", {"name": "Ada"})
        page.goto(f"{server.url}/runs/{run['run_id']}")
        reason = page.locator("#queued-reason")
        reason.filter(has_text="Waiting: no live worker").wait_for()
        assert fact(page, "started") == "not yet"
        # A worker comes: the run starts, and the page no longer says it waits.
        late = start_worker(isolated_stack.env, "late", tmp_path_factory.mktemp("late"))
        try:
            page.locator('#run-status [data-status="succeeded"]').wait_for()
            reason.wait_for(state="hidden")
            assert late.name in fact(page, "worker")
        finally:
            late.stop()
