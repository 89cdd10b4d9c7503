"""Scenarios calling MCP tools, end to end: the web lists the servers' tools, a real
Celery worker calls them over stdio and streamable HTTP, and the run's stream shows
their progress and logs like any step's.

The worker here has one pool process, so every step of the module shares its sessions:
that is what proves a stdio server is started once, not once per step.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from clients import submit, ws_events
from conftest import LiveServer, WorkerProcess, serve, start_web, start_worker, wait_for
from mcp_server import http_server
from stacks import Databases

from tasks.config import Settings
from tasks.mcp_tools.listing import list_servers
from web import create_app

#: A worker and MCP servers of its own, runs that time out: left out of `make test-fast`.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent.parent
SERVER = ROOT / "tests" / "mcp_server.py"
#: The example scenario shipped in scenarios/, run here against the same test server.
EXAMPLE = ROOT / "scenarios" / "mcp_demo.yaml"

SCENARIOS = {
    "mcp_mixed": """
steps:
  - {name: hello, tool: echo, input: {message: hi}}
  - {name: count, tool: demo.count, input: {n: 3}}
  - name: remote
    tool: remote.echo
    input: {message: {from: steps.hello.output.message}}
  - {name: again, tool: demo.echo, input: {message: again}}
""",
    "mcp_echo": """
input_schema: {type: object}
steps:
  - {name: call, tool: demo.echo, input: {message: {from: input.message}}}
""",
    "mcp_fail": "steps:\n  - {name: call, tool: demo.fail, input: {message: no luck}}\n",
    "mcp_crash": "steps:\n  - {name: call, tool: demo.crash, input: {}}\n",
    "mcp_hang": """
input_schema: {type: object, properties: {timeout: {type: number, default: 60}}}
steps:
  - {name: call, tool: demo.hang, input: {}, timeout_s: 1.5}
""",
    "mcp_slow": """
steps:
  - {name: call, tool: demo.hang, input: {}}
  - {name: after, tool: echo}
""",
    "mcp_retry": """
steps:
  - name: call
    tool: demo.fail
    input: {message: again and again}
    retry: {max_attempts: 2, backoff_s: 0.1}
""",
    "mcp_unknown": "steps:\n  - {name: call, tool: demo.nope, input: {}}\n",
    "python_only": "steps:\n  - {name: call, tool: echo, input: {x: 1}}\n",
}


def scenario_file(directory: Path, scenario_id: str, body: str) -> None:
    header = f'schema_version: "1"\nscenario_id: {scenario_id}\nname: {scenario_id}\n'
    (directory / f"{scenario_id}.yaml").write_text(header + body.lstrip("\n"))


@pytest.fixture(scope="module")
def http_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with http_server(tmp_path_factory.mktemp("mcp-http") / "http.log") as url:
        yield url


@pytest.fixture(scope="module")
def mcp_env(
    databases: Databases, tmp_path_factory: pytest.TempPathFactory, http_url: str
) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("mcp-runs")
    scenarios = tmp / "scenarios"
    scenarios.mkdir()
    for scenario_id, body in SCENARIOS.items():
        scenario_file(scenarios, scenario_id, body)
    shutil.copy(EXAMPLE, scenarios / EXAMPLE.name)
    config = tmp / "mcp.yaml"
    config.write_text(
        "servers:\n"
        f"  demo: {{command: {sys.executable}, args: ['{SERVER}']}}\n"
        f"  remote: {{url: '{http_url}'}}\n"
        "  gone: {url: 'http://127.0.0.1:1/mcp'}\n"
    )
    # Databases no other test uses: this module's worker must take only its own runs.
    return databases.stack(
        {},
        STEPSTREAM_SCENARIOS_DIR=str(scenarios),
        STEPSTREAM_HEARTBEAT_S="1",
        STEPSTREAM_CANCEL_GRACE_S="10",
        STEPSTREAM_MCP_CONFIG=str(config),
    ).env


@pytest.fixture(scope="module")
def mcp_worker(
    mcp_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    worker = start_worker(mcp_env, "mcp", tmp_path_factory.mktemp("logs"), concurrency=1)
    yield worker
    worker.stop()


@pytest.fixture(scope="module")
def server(mcp_env: dict[str, str], mcp_worker: WorkerProcess) -> Iterator[LiveServer]:
    with mcp_app(Settings.from_env(mcp_env)) as app, serve(app) as live:
        yield live


@contextlib.contextmanager
def mcp_app(settings: Settings) -> Iterator[Any]:
    """A web app whose MCP refresher is stopped afterwards (it would otherwise go on
    listing servers for the rest of the test session)."""
    app = create_app(settings)
    try:
        yield app
    finally:
        app.extensions["stepstream"].mcp.stop()


@pytest.fixture
def stack() -> Iterator[contextlib.ExitStack]:
    with contextlib.ExitStack() as exits:
        yield exits


def tools(url: str) -> dict[str, dict[str, Any]]:
    response = httpx.get(f"{url}/api/tools", timeout=10)
    assert response.status_code == 200
    return {t["name"]: t for t in response.json()}


@pytest.fixture(scope="module")
def listed(server: LiveServer) -> LiveServer:
    """The server once its catalog has listed both live MCP servers."""
    wait_for(lambda: {"demo.echo", "remote.echo"} <= set(tools(server.url)), 60, "MCP tools")
    return server


def run(
    server: LiveServer, scenario_id: str, run_input: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    run_id = submit(server.url, scenario_id, run_input)["run_id"]
    events, code = ws_events(server.ws_url, run_id, timeout=60)
    assert code == 1000, events
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    return events


def finished(events: list[dict[str, Any]], step: str = "call") -> dict[str, Any]:
    (event,) = [e for e in events if e["type"] == "step_finished" and e["step"] == step]
    return event


def run_status(events: list[dict[str, Any]]) -> str:
    return str(events[-1]["status"])


def test_api_lists_mcp_tools_next_to_python_ones(listed: LiveServer) -> None:
    listing = tools(listed.url)
    assert listing["echo"]["source"] == "python"
    echo = listing["demo.echo"]
    assert echo["source"] == "mcp"
    assert echo["server"] == "demo"
    assert echo["available"] is True
    assert echo["description"] == "Return the message it is given, and who answered."
    assert echo["input_schema"]["required"] == ["message"]
    assert {name for name in listing if name.startswith("remote.")} == {
        f"remote.{t}"
        for t in ("echo", "count", "greet", "whoami", "refuse", "fail", "hang", "crash")
    }
    assert not [name for name in listing if name.startswith("gone.")]


def test_readyz_reports_each_server(listed: LiveServer) -> None:
    body = httpx.get(f"{listed.url}/readyz", timeout=10).json()
    mcp = body["checks"]["mcp"]
    assert mcp["demo"] == "ok: 8 tools"
    assert mcp["remote"] == "ok: 8 tools"
    # A state in a word: the open probe shows no URL and no error text.
    assert mcp["gone"] == "unavailable"


def test_python_and_mcp_steps_run_together_and_stream_their_events(listed: LiveServer) -> None:
    events = run(listed, "mcp_mixed")
    assert run_status(events) == "succeeded", [e.get("message") for e in events]
    count = [e for e in events if e.get("step") == "count"]
    progress = [(e["progress"], e["message"]) for e in count if e["type"] == "step_progress"]
    assert progress == [
        (pytest.approx(1 / 3), "1 of 3"),
        (pytest.approx(2 / 3), "2 of 3"),
        (1.0, "3 of 3"),
    ]
    logs = [e["message"] for e in count if e["type"] == "step_log"]
    assert logs == ["[info] tick 1", "[info] tick 2", "[info] tick 3"]
    assert finished(events, "count")["output"] == {"counted": 3}
    remote = finished(events, "remote")["output"]
    assert remote["message"] == "hi"
    # One session per server per worker process: both demo.echo-family calls of this
    # run and the next run's reach the same stdio server process.
    pid = finished(events, "again")["output"]["server_pid"]
    later = run(listed, "mcp_echo", {"message": "later"})
    assert finished(later)["output"] == {"message": "later", "server_pid": pid}
    assert remote["server_pid"] != pid


def test_the_shipped_example_runs(listed: LiveServer) -> None:
    events = run(listed, "mcp_demo", {"name": "Ada", "n": 2})
    assert run_status(events) == "succeeded"
    assert finished(events, "report")["output"] == {
        "greeting": [{"type": "text", "text": "hello, Ada"}],
        "counted": 2,
    }
    assert [e["progress"] for e in events if e["type"] == "step_progress"] == [0.5, 1.0]


def test_the_shipped_configuration_starts_the_test_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # its paths are relative to where the worker runs
    listed = list_servers(ROOT / "mcp.yaml")["servers"]
    assert {t["name"] for t in listed["demo"]["tools"]} >= {"echo", "count", "greet"}


def test_an_error_result_fails_the_step_with_the_tools_message(listed: LiveServer) -> None:
    events = run(listed, "mcp_fail")
    assert run_status(events) == "failed"
    step = finished(events)
    assert step["status"] == "failed"
    assert "demo.fail failed: Error executing tool fail: no luck" in step["message"]


def test_a_failing_call_is_retried_like_any_step(listed: LiveServer) -> None:
    events = run(listed, "mcp_retry")
    assert run_status(events) == "failed"
    started = [e["attempt"] for e in events if e["type"] == "step_started"]
    assert started == [1, 2]
    (retrying,) = [e for e in events if e["type"] == "step_retrying"]
    assert retrying["delay_s"] == 0.1


def test_the_worker_reports_the_servers_at_start(mcp_worker: WorkerProcess) -> None:
    def logged() -> str:
        return mcp_worker.log_path.read_text()

    wait_for(lambda: "MCP server 'gone' unavailable" in logged(), 60, "the worker's report")
    assert "MCP server 'demo': 8 tools" in logged()
    assert "MCP server 'remote': 8 tools" in logged()


def test_input_is_checked_against_the_tools_schema_before_the_call(listed: LiveServer) -> None:
    events = run(listed, "mcp_echo", {"message": 3})
    step = finished(events)
    assert step["status"] == "failed"
    assert (
        step["message"] == "invalid input for tool demo.echo: $.message: 3 is not of type 'string'"
    )


def test_a_step_times_out_like_any_other(listed: LiveServer) -> None:
    events = run(listed, "mcp_hang")
    step = finished(events)
    assert step["status"] == "failed"
    assert "timed out after 1.5 s" in step["message"]
    # The worker and its session are still fine.
    assert run_status(run(listed, "mcp_echo", {"message": "ok"})) == "succeeded"


def test_cancelling_a_run_stops_the_call(listed: LiveServer) -> None:
    run_id = submit(listed.url, "mcp_slow")["run_id"]

    def call_status() -> str:
        snapshot = httpx.get(f"{listed.url}/api/runs/{run_id}", timeout=10).json()
        return str(next(s["status"] for s in snapshot["steps"] if s["name"] == "call"))

    wait_for(lambda: call_status() == "running", 30, "the hanging call to start")
    assert httpx.post(f"{listed.url}/api/runs/{run_id}/cancel", timeout=10).status_code == 202
    events, code = ws_events(listed.ws_url, run_id, timeout=30)
    assert code == 1000
    assert run_status(events) == "cancelled"
    step = finished(events)
    assert step["status"] == "cancelled"
    assert step["message"] == "cancelled during the call to demo.hang"
    assert not [e for e in events if e.get("step") == "after" and e["type"] == "step_started"]


def test_a_server_crashing_mid_call_fails_the_step_and_the_next_call_restarts_it(
    listed: LiveServer,
) -> None:
    before = finished(run(listed, "mcp_echo", {"message": "x"}))["output"]["server_pid"]
    events = run(listed, "mcp_crash")
    step = finished(events)
    assert step["status"] == "failed"
    assert "MCP server 'demo' failed during the call to 'crash': " in step["message"]
    after = finished(run(listed, "mcp_echo", {"message": "y"}))["output"]["server_pid"]
    assert after != before


def test_a_scenario_naming_a_tool_the_server_lacks_is_left_out(listed: LiveServer) -> None:
    response = httpx.get(f"{listed.url}/api/scenarios/mcp_unknown", timeout=10)
    assert response.status_code == 404
    errors = listed.app.extensions["stepstream"].catalog.errors
    assert any("uses unknown tool 'demo.nope'" in e.reason for e in errors)
    assert httpx.get(f"{listed.url}/api/scenarios/mcp_echo", timeout=10).status_code == 200


def test_python_scenarios_run_whatever_the_mcp_servers_do(listed: LiveServer) -> None:
    assert run_status(run(listed, "python_only")) == "succeeded"


def test_a_server_that_stops_answering_keeps_its_tools_marked_unavailable(
    stack: contextlib.ExitStack, mcp_env: dict[str, str], tmp_path: Path
) -> None:
    with http_server(tmp_path / "http.log") as url:
        config = tmp_path / "mcp.yaml"
        config.write_text(f"servers:\n  flaky: {{url: '{url}'}}\n")
        app = stack.enter_context(
            mcp_app(replace(Settings.from_env(mcp_env), mcp_config=config, mcp_refresh_s=3600))
        )
        web = app.test_client()
        listing = wait_for(
            lambda: {
                t["name"]: t for t in web.get("/api/tools").json if t["name"].startswith("flaky.")
            },
            60,
            "the first listing",
        )
        assert listing["flaky.echo"]["available"] is True
    # The server is gone; a refresh asked for now marks its tools, and keeps them.
    response = web.post("/api/tools/refresh")
    assert response.status_code == 202
    assert response.json == {"status": "refreshing"}
    echo = wait_for(
        lambda: next(
            (
                t
                for t in web.get("/api/tools").json
                if t["name"] == "flaky.echo" and not t["available"]
            ),
            None,
        ),
        60,
        "the tools marked unavailable",
    )
    assert "is unreachable" in echo["error"]
    assert web.get("/readyz").json["checks"]["mcp"]["flaky"] == "unavailable"


def test_a_broken_configuration_is_reported_and_nothing_else_breaks(
    stack: contextlib.ExitStack, mcp_env: dict[str, str], tmp_path: Path
) -> None:
    config = tmp_path / "mcp.yaml"
    config.write_text("servers:\n  demo: {command: x, url: http://x}\n")
    app = stack.enter_context(mcp_app(replace(Settings.from_env(mcp_env), mcp_config=config)))
    web = app.test_client()
    checks = web.get("/readyz").json["checks"]
    assert checks["mcp"] == {"config": "invalid"}
    listing = {t["name"] for t in web.get("/api/tools").json}
    assert "echo" in listing and not [n for n in listing if "." in n and n.startswith("demo.")]
    assert web.get("/api/scenarios/python_only").status_code == 200
    assert web.get("/api/scenarios/mcp_echo").status_code == 404
    # Fixed, the file is read again by the next refresh.
    config.write_text(f"servers:\n  demo: {{command: {sys.executable}, args: ['{SERVER}']}}\n")
    assert web.post("/api/tools/refresh").status_code == 202
    wait_for(
        lambda: "demo.echo" in {t["name"] for t in web.get("/api/tools").json}, 60, "demo's tools"
    )
    assert web.get("/readyz").json["checks"]["mcp"] == {"demo": "ok: 8 tools"}
    assert web.get("/api/scenarios/mcp_echo").status_code == 200


def test_under_gunicorn_and_gevent_the_catalog_lists_the_servers(
    mcp_env: dict[str, str], mcp_worker: WorkerProcess, tmp_path: Path
) -> None:
    # The production shape: the refresher is a greenlet, its subprocess cooperative.
    web = start_web(mcp_env, tmp_path, "web-mcp")
    try:
        wait_for(lambda: "demo.echo" in tools(web.url), 60, "the listing under gevent")
        assert httpx.post(f"{web.url}/api/tools/refresh", timeout=10).status_code == 202
        checks = httpx.get(f"{web.url}/readyz", timeout=10).json()["checks"]
        assert checks["mcp"]["remote"] == "ok: 8 tools"
        # And it is served while steps run through the worker.
        run_id = submit(web.url, "mcp_echo", {"message": "gevent"})["run_id"]
        events, code = ws_events(web.url.replace("http", "ws", 1), run_id, timeout=60)
        assert code == 1000
        assert finished(events)["output"]["message"] == "gevent"
    finally:
        web.kill()


def test_the_catalog_is_refreshed_on_a_timer(
    stack: contextlib.ExitStack, mcp_env: dict[str, str], tmp_path: Path, http_url: str
) -> None:
    config = tmp_path / "mcp.yaml"
    config.write_text(f"servers:\n  first: {{url: '{http_url}'}}\n")
    app = stack.enter_context(
        mcp_app(replace(Settings.from_env(mcp_env), mcp_config=config, mcp_refresh_s=0.2))
    )
    web = app.test_client()

    def names() -> set[str]:
        return {t["name"] for t in web.get("/api/tools").json}

    wait_for(lambda: "first.echo" in names(), 60, "the first listing")
    # No refresh asked for: the timer reads the file again and lists the new server.
    config.write_text(f"servers:\n  second: {{url: '{http_url}'}}\n")
    wait_for(lambda: "second.echo" in names() and "first.echo" not in names(), 60, "the timer")


def test_without_a_configuration_there_are_no_mcp_tools(mcp_env: dict[str, str]) -> None:
    app = create_app(replace(Settings.from_env(mcp_env), mcp_config=None))
    web = app.test_client()
    assert all(t["source"] == "python" for t in web.get("/api/tools").json)
    assert "mcp" not in web.get("/readyz").json["checks"]
    assert web.post("/api/tools/refresh").json == {"status": "no MCP servers configured"}
    json.dumps(web.get("/api/tools").json)  # plain JSON, whatever the tools
