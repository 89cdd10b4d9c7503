"""The browser UI in a real headless Chromium (Debian's, driven by Playwright), against
a real server and worker."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from clients import submit
from conftest import LiveServer, WorkerProcess, serve, wait_for

#: A real Chromium: left out of `make test-fast`.
pytestmark = pytest.mark.slow


def box(page: Any, step: str) -> Any:
    return page.locator(f'.step[data-step="{step}"]')


def run_status(page: Any, status: str) -> None:
    page.locator(f'#run-status [data-status="{status}"]').wait_for()


def timeline(page: Any) -> list[tuple[str, str]]:
    return [tuple(x) for x in page.evaluate("window.stepstreamRun.timeline")]


def border_colour(locator: Any) -> str:
    return str(locator.evaluate("el => getComputedStyle(el).borderTopColor"))


GREEN, RED, AMBER = "rgb(23, 133, 59)", "rgb(198, 40, 40)", "rgb(178, 106, 0)"


def test_a_run_started_from_its_form_turns_green_step_by_step(
    live_server: LiveServer, worker: WorkerProcess, page: Any
) -> None:
    page.goto(f"{live_server.url}/#scenarios")
    form = page.locator('form[data-scenario="hello_sequence"]')
    form.locator('input[name="name"]').fill("Ada")
    form.get_by_role("button", name="Start run").click()
    page.wait_for_url(re.compile(r"/runs/[0-9a-f-]{36}$"))
    run_status(page, "succeeded")

    succeeded = [step for step, status in timeline(page) if status == "succeeded"]
    assert succeeded == ["greet", "pause", "compose"]
    # Each box went pending -> running -> succeeded, never back.
    for step in succeeded:
        seen = [status for s, status in timeline(page) if s == step]
        assert seen[0] == "running" and seen[-1] == "succeeded", (step, seen)
        assert box(page, step).get_attribute("data-status") == "succeeded"
        assert border_colour(box(page, step)) == GREEN
    # The progress bar followed step_progress, and the event log shows each event.
    assert page.locator('#event-log li[data-type="step_progress"]').count() >= 1
    assert page.locator("#connection").get_attribute("data-state") == "finished"
    assert re.fullmatch(r"succeeded · run [0-9a-f]{8} · stepstream", page.title()), page.title()
    box(page, "compose").click()
    assert "Ada" in page.locator("#detail").inner_text()


def test_a_failing_step_turns_red_and_what_needed_it_is_skipped(
    live_server: LiveServer, worker: WorkerProcess, page: Any
) -> None:
    run = submit(live_server.url, "failing_step", {"reason": "on purpose"})
    page.goto(f"{live_server.url}/runs/{run['run_id']}")
    run_status(page, "failed")
    failed = page.locator('.step[data-status="failed"]')
    assert failed.count() == 1 and border_colour(failed) == RED
    assert page.locator('.step[data-status="skipped"]').count() >= 1
    failed.click()
    assert "on purpose" in page.locator("#detail").inner_text()
    assert page.locator("#cancel").is_disabled()


def test_cancelling_a_long_run_from_the_page(
    live_server: LiveServer, worker: WorkerProcess, page: Any
) -> None:
    run = submit(live_server.url, "test_cancellable", {"seconds": 30})
    page.goto(f"{live_server.url}/runs/{run['run_id']}")
    box(page, "long").locator('xpath=self::*[@data-status="running"]').wait_for()
    page.locator("#cancel").click()
    run_status(page, "cancelled")
    assert box(page, "long").get_attribute("data-status") == "cancelled"
    assert border_colour(box(page, "long")) == AMBER


def test_a_dropped_websocket_is_resumed_and_no_event_is_missed_or_repeated(
    live_server: LiveServer, worker: WorkerProcess, page: Any
) -> None:
    urls: list[str] = []
    routes: list[Any] = []

    def proxy(ws: Any) -> None:
        urls.append(ws.url)
        routes.append(ws)
        ws.connect_to_server()

    page.route_web_socket(re.compile(r"/api/runs/[^/]+/ws"), proxy)
    run = submit(live_server.url, "test_slow_progress", {"seconds": 3})
    page.goto(f"{live_server.url}/runs/{run['run_id']}")
    # Record every state the connection indicator shows.
    page.evaluate(
        """() => {
            window.seenStates = [];
            const el = document.getElementById('connection');
            new MutationObserver(() => window.seenStates.push(el.dataset.state))
                .observe(el, {attributes: true});
        }"""
    )
    page.locator('#event-log li[data-type="step_progress"]').nth(2).wait_for()
    routes[0].close(code=4000, reason="dropped by the test")
    run_status(page, "succeeded")

    assert "reconnecting" in page.evaluate("window.seenStates")
    assert len(urls) >= 2 and "after=" in urls[1]
    seqs = [int(s) for s in page.locator("#event-log li").evaluate_all(
        "items => items.map(li => li.dataset.seq)")]  # fmt: skip
    stored = httpx.get(
        f"{live_server.url}/api/runs/{run['run_id']}/events",
        headers={"Accept": "application/json"},
        params={"limit": 1000},
    ).json()["events"]
    assert seqs == [e["seq"] for e in stored] == list(range(1, len(stored) + 1))


def test_the_form_checks_input_and_shows_the_apis_errors_by_their_fields(
    live_server: LiveServer, page: Any
) -> None:
    page.goto(f"{live_server.url}/#scenarios")
    form = page.locator('form[data-scenario="test_validation"]')
    form.get_by_role("button", name="Start run").click()  # nothing filled in
    assert form.locator('[data-field="count"]').inner_text() == "is required"
    form.locator('input[name="count"]').fill("0")
    form.locator('input[name="name"]').fill("x")
    form.get_by_role("button", name="Start run").click()
    assert form.locator('[data-field="count"]').inner_text() == "must be at least 1"
    # A rule only the API checks: the item objects' required url.
    form.locator('input[name="count"]').fill("2")
    form.locator('textarea[name="items"]').fill('[{"nourl": 1}]')
    form.get_by_role("button", name="Start run").click()
    error = form.locator('[data-field="items"]')
    error.filter(has_text="items[0].url: is required").wait_for()
    assert page.url.endswith("/#scenarios")  # no run was started


def test_the_runs_list_filters_and_updates_itself(
    live_server: LiveServer, worker: WorkerProcess, page: Any
) -> None:
    first = submit(live_server.url, "failing_step", {"reason": "x"})
    page.goto(f"{live_server.url}/")
    page.locator(f'tr[data-run="{first["run_id"]}"]').wait_for()
    page.locator("#filter-status").select_option("succeeded")
    wait_for(
        lambda: page.locator(f'tr[data-run="{first["run_id"]}"]').count() == 0,
        what="the failed run filtered out",
    )
    page.locator("#filter-status").select_option("")
    later = submit(live_server.url, "hello_sequence", {"name": "later"})
    # Appears without a reload, newest first, and turns succeeded by itself.
    row = page.locator("#runs-table tbody tr").first
    wait_for(lambda: row.get_attribute("data-run") == later["run_id"], what="the new run listed")
    page.locator(f'tr[data-run="{later["run_id"]}"] [data-status="succeeded"]').wait_for()


def test_the_workers_page_and_the_flower_link(
    live_server: LiveServer, worker: WorkerProcess, page: Any
) -> None:
    page.goto(f"{live_server.url}/#workers")
    page.locator('#workers-table tr[data-worker^="w1@"] [data-status="ok"]').wait_for()
    assert page.locator("#flower-link").get_attribute("href") == "http://127.0.0.1:5555/"


def test_with_a_token_the_page_asks_once_and_keeps_it_for_the_tab(
    app_factory: Callable[..., Any], worker: WorkerProcess, page: Any
) -> None:
    with serve(app_factory(api_token="s3cret")) as server:
        run = submit(
            server.url, "hello_sequence", {"name": "t"}, {"Authorization": "Bearer s3cret"}
        )
        page.goto(f"{server.url}/runs/{run['run_id']}")
        page.locator("#token-input").fill("wrong")
        page.locator("#token-input").press("Enter")
        page.locator("#token-error").filter(has_text="refused").wait_for()
        page.locator("#token-input").fill("s3cret")
        page.locator("#token-input").press("Enter")
        run_status(page, "succeeded")
        page.goto(f"{server.url}/#runs")  # same tab: no second prompt
        page.locator(f'tr[data-run="{run["run_id"]}"]').wait_for()
        assert not page.locator("#token-dialog").is_visible()


def test_the_scenarios_page_shows_the_files_left_out_and_counts_steps_in_words(
    app_factory: Callable[..., Any], tmp_path: Any, page: Any
) -> None:
    good = 'schema_version: "1"\nscenario_id: {}\nname: N\nsteps: [{{name: a, tool: echo}}]\n'
    (tmp_path / "good.yaml").write_text(good.format("good"))
    (tmp_path / "twin_a.yaml").write_text(good.format("twin"))
    (tmp_path / "twin_b.yaml").write_text(good.format("twin"))
    (tmp_path / "syntax.yaml").write_text("steps: [\n")
    (tmp_path / "tool.yaml").write_text(good.format("teleporting").replace("echo", "teleport"))
    (tmp_path / "cycle.yaml").write_text(
        'schema_version: "1"\nscenario_id: cyclic\nname: C\n'
        "steps: [{name: a, tool: echo, needs: [b]}, {name: b, tool: echo, needs: [a]}]\n"
    )
    (tmp_path / "hostile.yaml").write_text(
        good.format("<img src=x onerror=alert(1)>")
    )  # an invalid id, shown as text
    with serve(app_factory(scenarios_dir=tmp_path)) as server:
        page.goto(f"{server.url}/#scenarios")
        panel = page.get_by_role("region", name="Problems")
        panel.wait_for()
        items = panel.locator("li")
        assert items.count() == 6
        text = {
            name: panel.locator(f'li[data-path$="/{name}"]').inner_text()
            for name in ("twin_a.yaml", "twin_b.yaml", "syntax.yaml", "tool.yaml", "cycle.yaml")
        }
        assert "duplicate scenario_id 'twin' (also in twin_b.yaml)" in text["twin_a.yaml"]
        assert "(twin)" in text["twin_b.yaml"]
        assert "invalid YAML" in text["syntax.yaml"]
        assert "unknown tool 'teleport'" in text["tool.yaml"]
        assert "cycle" in text["cycle.yaml"]
        assert "<img src=x onerror=alert(1)>" in panel.inner_text()
        assert page.locator("form[data-scenario]").count() == 1  # only good.yaml loaded
        assert page.get_by_text("good · 1 step", exact=True).count() == 1  # not "1 steps"
        assert page.locator("section.problems img").count() == 0


def test_an_unknown_run_is_a_not_found_page_and_titles_follow_the_page(
    live_server: LiveServer, page: Any
) -> None:
    page.goto(f"{live_server.url}/runs/00000000-0000-4000-8000-000000000000")
    page.get_by_role("heading", name="Run not found").wait_for()
    assert page.title() == "Run not found · stepstream"
    assert page.locator("#cancel").count() == 0
    assert page.locator("#connection").count() == 0
    page.get_by_role("link", name="All runs").click()
    page.get_by_role("heading", name="Runs").wait_for()
    assert page.title() == "Runs · stepstream"
