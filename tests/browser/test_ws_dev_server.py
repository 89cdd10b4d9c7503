"""A real browser's WebSocket gets every event and a clean close, whichever server runs
the web: Werkzeug's development server (`flask run`) or gunicorn with gevent."""

from __future__ import annotations

import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from conftest import ONE_STEP as SCENARIO
from conftest import serve, start_web

from tasks.config import Settings
from tasks.store import RunStore

#: A real Chromium: left out of `make test-fast`.
pytestmark = pytest.mark.slow


#: Opens a WebSocket, collects every message and the close event, and resolves with them.
FOLLOW = """
url => new Promise(resolve => {
    const got = [];
    const ws = new WebSocket(url);
    ws.onmessage = m => got.push(JSON.parse(m.data));
    ws.onclose = e => resolve({events: got, code: e.code, wasClean: e.wasClean});
})
"""


@pytest.fixture
def quiet(
    settings: Settings, base_env: dict[str, str], quiet_db: str
) -> tuple[Settings, dict[str, str]]:
    """A store database no worker sweeps (the runs here have a made-up worker)."""
    return replace(settings, redis_url=quiet_db), {**base_env, "STEPSTREAM_REDIS_URL": quiet_db}


def finished_run(settings: Settings, logs: int) -> list[str]:
    """A run with `logs` log events that has finished; returns its event ids in order."""
    store = RunStore.from_settings(settings)
    run_id = str(uuid.uuid4())
    try:
        store.create_run(run_id, SCENARIO, {})
        store.start_run(run_id, "w@test")
        store.start_step(run_id, "only", 1, "w@test")
        for n in range(1, logs + 1):
            store.step_event(run_id, "only", 1, "step_log", {"message": "x" * 300}, number=n)
        store.finish_step(run_id, "only", 1, "succeeded", "", "1")
        return [run_id] + [e.id for e in store.read_events(run_id, "0", 10_000)]
    finally:
        store.close()


def follow_in_browser(browser: Any, base_url: str, run_id: str) -> dict[str, Any]:
    page = browser.new_page()
    try:
        page.goto(f"{base_url}/healthz")  # the web's own origin
        ws_url = "ws" + base_url[len("http") :] + f"/api/runs/{run_id}/ws"
        result: dict[str, Any] = page.evaluate(FOLLOW, ws_url)
        return result
    finally:
        page.close()


@pytest.mark.parametrize("logs", [0, 200])
def test_the_development_server_ends_a_browser_websocket_cleanly(
    browser: Any, app_factory: Any, quiet: tuple[Settings, dict[str, str]], logs: int
) -> None:
    settings, _ = quiet
    run_id, *ids = finished_run(settings, logs)
    app = app_factory(redis_url=settings.redis_url)
    with serve(app) as server:  # Werkzeug's server, as `flask run` uses
        for _ in range(3):
            result = follow_in_browser(browser, server.url, run_id)
            got = [e["id"] for e in result["events"]]
            assert (got, result["code"], result["wasClean"]) == (ids, 1000, True)
            assert result["events"][-1]["type"] == "run_finished"
            assert (result["code"], result["wasClean"]) == (1000, True)


def test_gunicorn_ends_a_browser_websocket_cleanly(
    browser: Any, quiet: tuple[Settings, dict[str, str]], tmp_path: Path
) -> None:
    settings, env = quiet
    run_id, *ids = finished_run(settings, 200)
    web = start_web(env, tmp_path, "web-browser-ws")
    try:
        for _ in range(3):
            result = follow_in_browser(browser, web.url, run_id)
            assert [e["id"] for e in result["events"]] == ids
            assert (result["code"], result["wasClean"]) == (1000, True)
    finally:
        web.kill()
