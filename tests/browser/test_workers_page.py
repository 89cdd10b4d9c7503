"""The Workers page's details and the no-worker banner, in a real headless Chromium
against a real server and real workers."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import redis
from clients import submit
from conftest import LiveServer, Stack, WorkerProcess, serve, start_worker, wait_for_event

#: A real Chromium: left out of `make test-fast`.
pytestmark = pytest.mark.slow

BANNER = "No worker is running: runs will wait. Start one with make up or celery -A worker worker"


def test_the_workers_page_shows_queues_slots_and_the_steps_running(
    live_server: LiveServer, worker: WorkerProcess, r: redis.Redis, page: Any
) -> None:
    run_id = submit(live_server.url, "test_cancellable", {"seconds": 30})["run_id"]
    try:
        wait_for_event(r, run_id, lambda e: e["type"] == "step_started", what="long started")
        page.goto(f"{live_server.url}/#workers")
        row = page.locator('#workers-table tr[data-worker^="w1@"]')
        row.locator('[data-status="ok"]').wait_for()
        step = row.locator(f'.current-steps li[data-run="{run_id}"]')
        step.wait_for()
        assert step.get_attribute("data-step") == "long"
        assert f"#1 · run {run_id[:8]}" in step.inner_text()
        assert row.locator("td.queues").inner_text().strip() == "stepstream"
        assert re.fullmatch(r"[12] / 2", row.locator("td.slots").inner_text().strip())
        # No banner while a worker is alive.
        assert page.locator("#no-worker-banner").is_hidden()
        step.get_by_role("link", name="long").click()
        page.wait_for_url(f"{live_server.url}/runs/{run_id}")
        page.locator('.step[data-step="long"]').wait_for()
    finally:
        httpx.post(f"{live_server.url}/api/runs/{run_id}/cancel")
        wait_for_event(r, run_id, lambda e: e["type"] == "run_finished", what="the end")


def test_the_banner_shows_on_every_page_while_no_worker_runs_and_goes_when_one_starts(
    app_factory: Callable[..., Any],
    isolated_stack: Stack,
    tmp_path_factory: pytest.TempPathFactory,
    page: Any,
) -> None:
    with serve(app_factory(**isolated_stack.urls)) as server:
        banner = page.locator("#no-worker-banner")
        page.goto(f"{server.url}/#runs")
        banner.wait_for()
        assert banner.inner_text().strip() == BANNER
        assert banner.get_attribute("role") == "status"
        for tab in ("scenarios", "workers"):
            page.goto(f"{server.url}/#{tab}")
            page.locator(f'nav a.active[data-tab="{tab}"]').wait_for()
            assert banner.is_visible(), tab
        run_id = submit(server.url, "hello_sequence", {"name": "w"})["run_id"]
        page.goto(f"{server.url}/runs/{run_id}")
        banner.wait_for()
        late = start_worker(isolated_stack.env, "w6", tmp_path_factory.mktemp("w6"))
        try:
            banner.wait_for(state="hidden")  # at the banner's next look, without a reload
            page.locator('#run-status [data-status="succeeded"]').wait_for()
        finally:
            late.stop()
