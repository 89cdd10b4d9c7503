"""What the registry tells beyond liveness, against real worker processes: what each
worker is doing (`GET /api/workers`), why a run waits (`queued_reason` in its
snapshot and `stepstream show`), and the tools a worker must restart for (`GET
/api/tools`, `stepstream tools`)."""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner
from conftest import Stack, WorkerProcess, serve, start_worker, wait_for, wait_for_event

from client.cli import main
from tasks import keys


def worker_row(client: Any, name: str) -> dict[str, Any] | None:
    response = client.get("/api/workers")
    assert response.status_code == 200
    return next((w for w in response.json if w["name"].startswith(f"{name}@")), None)


def submit(client: Any, scenario_id: str, run_input: dict[str, Any] | None = None) -> str:
    response = client.post("/api/runs", json={"scenario_id": scenario_id, "input": run_input or {}})
    assert response.status_code == 202, response.json
    run_id: str = response.json["run_id"]
    return run_id


def snapshot(client: Any, run_id: str) -> dict[str, Any]:
    response = client.get(f"/api/runs/{run_id}")
    assert response.status_code == 200
    body: dict[str, Any] = response.json
    return body


def started(store: redis.Redis, run_id: str, step: str) -> None:
    wait_for_event(
        store,
        run_id,
        lambda e: e["type"] == "step_started" and e.get("step") == step,
        what=f"{step} started",
    )


def cancel_and_wait(client: Any, store: redis.Redis, *run_ids: str) -> None:
    for run_id in run_ids:
        assert client.post(f"/api/runs/{run_id}/cancel").status_code in (202, 409)
    for run_id in run_ids:
        wait_for_event(store, run_id, lambda e: e["type"] == "run_finished", what="the end")


def test_a_worker_row_says_what_it_consumes_and_runs(
    app_factory: Callable[..., Any], worker: WorkerProcess, r: redis.Redis
) -> None:
    client = app_factory().test_client()
    run_id = submit(client, "test_cancellable", {"seconds": 30})
    started(r, run_id, "long")
    row = wait_for(
        lambda: (
            (w := worker_row(client, "w1"))
            and any(s["run_id"] == run_id for s in w["current_steps"])
            and w
        ),
        what="the running step in w1's row",
    )
    assert row["status"] == "ok"
    assert row["queues"] == ["stepstream"]
    assert row["concurrency"] == 2 and 1 <= row["busy"] <= 2
    step = next(s for s in row["current_steps"] if s["run_id"] == run_id)
    assert (step["step"], step["attempt"]) == ("long", 1)
    assert step["started_at"].endswith("+00:00")
    # Running, its next step waiting on this one: it waits on no worker.
    assert snapshot(client, run_id)["queued_reason"] is None
    cancel_and_wait(client, r, run_id)
    # As soon as the step ends, not a heartbeat interval later.
    wait_for(
        lambda: (w := worker_row(client, "w1")) and not w["current_steps"],
        what="the step gone from w1's row",
    )


def test_with_no_worker_alive_a_queued_run_says_so_in_its_snapshot_and_the_cli(
    app_factory: Callable[..., Any], isolated_stack: Stack
) -> None:
    app = app_factory(**isolated_stack.urls)
    client = app.test_client()
    run_id = submit(client, "hello_sequence", {"name": "nobody"})
    body = snapshot(client, run_id)
    assert body["status"] == "queued" and body["queued_reason"] == "no live worker"
    with serve(app) as server:
        shown = CliRunner().invoke(main, ["--url", server.url, "show", run_id])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["queued_reason"] == "no live worker"
    assert f"run {run_id} is waiting: no live worker" in shown.stderr


def test_a_queue_no_live_worker_consumes_is_named(
    app_factory: Callable[..., Any], isolated_stack: Stack
) -> None:
    store = isolated_stack.store()
    try:
        # A live worker of another queue: its row as its heartbeat writes it.
        now = float(".".join(map(str, store.time())))
        row = {"name": "gpu@h", "last_heartbeat": now, "queues": ["gpu"], "concurrency": 4}
        store.hset(keys.workers(), "gpu@h", json.dumps(row))
    finally:
        store.close()
    client = app_factory(**isolated_stack.urls).test_client()
    run_id = submit(client, "hello_sequence", {"name": "q"})
    assert snapshot(client, run_id)["queued_reason"] == "no worker consumes queue stepstream"


def test_with_every_slot_busy_a_queued_run_says_so(
    app_factory: Callable[..., Any],
    isolated_stack: Stack,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    busy = start_worker(isolated_stack.env, "w8", tmp_path_factory.mktemp("w8"), concurrency=1)
    store = isolated_stack.store()
    client = app_factory(**isolated_stack.urls).test_client()
    try:
        first = submit(client, "test_cancellable", {"seconds": 30})
        started(store, first, "long")
        second = submit(client, "hello_sequence", {"name": "later"})
        body = wait_for(
            lambda: (s := snapshot(client, second))["queued_reason"] and s,
            what="the second run's reason",
        )
        assert body["status"] == "queued"
        assert body["queued_reason"] == "all 1 worker slot is busy"
        row = worker_row(client, "w8")
        assert row is not None and (row["concurrency"], row["busy"]) == (1, 1)
        cancel_and_wait(client, store, first)
        wait_for_event(store, second, lambda e: e["type"] == "run_finished", what="the second")
        assert snapshot(client, second)["queued_reason"] is None
    finally:
        store.close()
        busy.stop()


TOOL_MODULE = """\
from tasks.tools import tool


@tool({name!r}, description={description!r}, input_schema={{"type": "object"}})
def the_tool(ctx, /, **values):
    return values
"""


def plugin(root: Path, module: str, tool_name: str, description: str = "v1") -> Path:
    """A tool module and the dist-info that declares it in `stepstream.tools`, as an
    installed plugin (the way tests/tools/ is found)."""
    source = root / f"{module}.py"
    source.write_text(TOOL_MODULE.format(name=tool_name, description=description))
    dist = root / f"{module}-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[stepstream.tools]\n{tool_name} = {module}:the_tool\n")
    return source


@pytest.fixture
def plugin_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory of plugins, on this process' path while the test runs."""
    root = tmp_path / "plugins"
    root.mkdir()
    sys.path.insert(0, str(root))
    yield root
    sys.path.remove(str(root))


def tools_by_name(client: Any) -> dict[str, dict[str, Any]]:
    response = client.get("/api/tools")
    assert response.status_code == 200
    return {t["name"]: t for t in response.json}


def test_tools_changed_or_installed_since_a_worker_started_need_a_restart(
    app_factory: Callable[..., Any],
    isolated_stack: Stack,
    plugin_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    tag = uuid.uuid4().hex[:8]
    module, name = f"stepstream_tmp_tools_{tag}", f"tmp_tool_{tag}"
    source = plugin(plugin_dir, module, name)
    env = {
        **isolated_stack.env,
        "PYTHONPATH": os.pathsep.join([str(plugin_dir), isolated_stack.env["PYTHONPATH"]]),
    }
    w9 = start_worker(env, "w9", tmp_path_factory.mktemp("w9"), concurrency=1)
    app = app_factory(**isolated_stack.urls)  # loads the plugin too: it is on sys.path
    client = app.test_client()
    try:
        loaded = wait_for(lambda: tools_by_name(client).get(name), what="the plugin listed")
        assert (loaded["loaded"], loaded["restart_needed"], loaded["reason"]) == (True, False, None)
        assert tools_by_name(client)["echo"]["restart_needed"] is False

        source.write_text(source.read_text() + "# edited after the worker started\n")
        changed = wait_for(
            lambda: (t := tools_by_name(client)[name])["restart_needed"] and t,
            what="the edited tool flagged",
        )
        w9_name = worker_row(client, "w9")["name"]  # type: ignore[index]
        assert changed["reason"] == f"changed on disk since worker {w9_name} started"
        assert changed["loaded"] is True

        newer = f"tmp_new_{tag}"
        plugin(plugin_dir, f"{module}_new", newer)
        fresh = wait_for(lambda: tools_by_name(client).get(newer), what="the new plugin listed")
        assert (fresh["loaded"], fresh["restart_needed"]) == (False, True)
        assert fresh["entry_point"] == f"{newer} = {module}_new:the_tool"
        assert fresh["reason"] == (
            f"new entry point `{fresh['entry_point']}` on disk since worker {w9_name} started"
        )

        with serve(app) as server:
            listed = CliRunner().invoke(main, ["--url", server.url, "tools"])
        assert listed.exit_code == 0, listed.output
        assert "restart needed for 2 tool(s)" in listed.output
        assert f"changed on disk since worker {w9_name} started" in listed.output
    finally:
        w9.stop()
