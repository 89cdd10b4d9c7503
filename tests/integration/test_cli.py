"""The `stepstream` console script against a real server and worker.

Most commands run in-process through click's runner; interrupts and reconnects run
the installed console script as a real process, sending it SIGINT or killing the web
server under it.
"""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result
from conftest import LiveServer, WorkerProcess, serve, start_web, wait_for
from rich.console import Console

from web.cli import main
from web.live_view import RunView

#: The console script `pip install` made, next to the interpreter running the tests.
STEPSTREAM = str(Path(sys.executable).with_name("stepstream"))


def cli(server: LiveServer | str, *args: str, token: str | None = None) -> Result:
    url = server if isinstance(server, str) else server.url
    extra = ["--token", token] if token else []
    return CliRunner().invoke(main, ["--url", url, *extra, *args], catch_exceptions=False)


def json_lines(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def test_run_follow_shows_each_step_and_exits_0_on_success(
    live_server: LiveServer, worker: WorkerProcess
) -> None:
    result = cli(live_server, "run", "hello_sequence", "-i", "name=Ada", "--follow")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    for step in ("greet", "pause", "compose"):
        assert any(line.startswith(f"✔ {step} succeeded in ") for line in lines), lines
    assert lines[-1] == "run succeeded"


def test_run_follow_exits_1_when_the_run_fails(
    live_server: LiveServer, worker: WorkerProcess
) -> None:
    result = cli(live_server, "run", "failing_step", "--input", '{"reason": "boom"}', "--follow")
    assert result.exit_code == 1, result.output
    assert any(line.startswith("✘ ") and "boom" in line for line in result.output.splitlines())
    assert "- " in result.output and " skipped" in result.output
    assert "run failed" in result.output


def test_json_lines_and_tail_after_a_cursor(live_server: LiveServer, worker: WorkerProcess) -> None:
    result = cli(live_server, "run", "hello_sequence", "-i", "name=Ada", "--follow", "--json")
    assert result.exit_code == 0
    events = json_lines(result.output)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["type"] == "run_finished"
    run_id = events[0]["run_id"]

    tail = cli(live_server, "tail", run_id, "--json", "--after", events[2]["id"])
    assert tail.exit_code == 0
    assert json_lines(tail.output) == events[3:]
    assert cli(live_server, "tail", run_id, "--json").exit_code == 0  # from the start


def test_listing_showing_and_cancelling(live_server: LiveServer, worker: WorkerProcess) -> None:
    started = cli(live_server, "run", "test_cancellable")
    assert started.exit_code == 0
    run_id = json.loads(started.output)["run_id"]

    assert run_id in cli(live_server, "runs", "--scenario", "test_cancellable").output
    assert "hello_sequence" in cli(live_server, "scenarios").output
    listed = cli(live_server, "tools", "--refresh")
    assert listed.exit_code == 0
    assert "http_request" in listed.output and "python" in listed.output

    # The store was emptied for this test: the worker's row is back at its next beat.
    def worker_listed() -> str | None:
        output = cli(live_server, "workers").output
        return output if "w1@" in output else None

    workers = wait_for(worker_listed, what="the worker's heartbeat row")
    assert " ok " in workers
    assert json.loads(cli(live_server, "show", run_id).output)["run_id"] == run_id

    cancelled = cli(live_server, "cancel", run_id)
    assert cancelled.exit_code == 0 and "being cancelled" in cancelled.output
    tail = cli(live_server, "tail", run_id)
    assert tail.exit_code == 1 and "run cancelled" in tail.output
    again = cli(live_server, "cancel", run_id)
    assert again.exit_code == 1 and "409" in again.output


def test_bad_input_and_unknown_things_give_clear_errors(live_server: LiveServer) -> None:
    not_object = cli(live_server, "run", "hello_sequence", "--input", "[1]")
    assert not_object.exit_code == 2 and "must be a JSON object" in not_object.output
    not_pair = cli(live_server, "run", "hello_sequence", "-i", "name")
    assert not_pair.exit_code == 2 and "is not key=value" in not_pair.output
    unknown = cli(live_server, "run", "no_such_scenario")
    assert unknown.exit_code == 1 and "404" in unknown.output
    invalid = cli(live_server, "run", "hello_sequence")
    assert invalid.exit_code == 1 and "422" in invalid.output and "name" in invalid.output
    missing = cli(live_server, "tail", "no-such-run")
    assert missing.exit_code == 1 and "404" in missing.output
    unreachable = cli("http://127.0.0.1:9", "runs")
    assert unreachable.exit_code == 1 and "cannot reach" in unreachable.output


def test_the_token_option(app_factory: Callable[..., Any], worker: WorkerProcess) -> None:
    with serve(app_factory(api_token="s3cret")) as server:
        refused = cli(server, "runs")
        assert refused.exit_code == 1 and "401" in refused.output
        result = cli(server, "run", "hello_sequence", "-i", "name=x", "--follow", token="s3cret")
        assert result.exit_code == 0, result.output


def spawn(url: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [STEPSTREAM, "--url", url, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str], timeout: float = 60) -> tuple[str, str]:
    """The rest of the output once the process ends (killed after `timeout`).

    Read through the same file objects as `read_until`: their buffers may already hold
    lines that `communicate()`, reading the raw pipes, would never see.
    """
    assert proc.stdout is not None and proc.stderr is not None
    watchdog = threading.Timer(timeout, proc.kill)
    watchdog.start()
    try:
        rest = proc.stdout.read()
        stderr = proc.stderr.read()
        proc.wait()
    finally:
        watchdog.cancel()
    return rest, stderr


def read_until(proc: subprocess.Popen[str], predicate: Callable[[dict[str, Any]], bool]) -> list:
    """Read JSON lines from the process until one satisfies `predicate`."""
    assert proc.stdout is not None
    events = []
    for line in proc.stdout:
        events.append(json.loads(line))
        if predicate(events[-1]):
            return events
    raise AssertionError(f"the stream ended first: {proc.stderr.read() if proc.stderr else ''}")


@pytest.mark.parametrize("cancel", [False, True], ids=["run-goes-on", "cancel-on-interrupt"])
def test_ctrl_c_exits_130(live_server: LiveServer, worker: WorkerProcess, cancel: bool) -> None:
    args = ["run", "test_cancellable", "--input", '{"seconds": 3}', "--follow", "--json"]
    proc = spawn(live_server.url, *args, *(["--cancel-on-interrupt"] if cancel else []))
    try:
        events = read_until(proc, lambda e: e["type"] == "step_progress")
        proc.send_signal(signal.SIGINT)
        _, stderr = finish(proc)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    run_url = f"{live_server.url}/api/runs/{events[0]['run_id']}"
    expected = "cancelled" if cancel else "succeeded"
    assert ("being cancelled" if cancel else "goes on") in stderr
    wait_for(lambda: httpx.get(run_url).json()["status"] == expected, what=f"the run {expected}")


def test_tail_reconnects_when_the_server_restarts(
    base_env: dict[str, str], worker: WorkerProcess, tmp_path: Path
) -> None:
    web = start_web(base_env, tmp_path, "web-1")
    port = int(web.url.rsplit(":", 1)[1])
    try:
        run = httpx.post(
            f"{web.url}/api/runs",
            json={"scenario_id": "test_slow_progress", "input": {"seconds": 2}},
        ).json()
        proc = spawn(web.url, "tail", run["run_id"], "--json")
        events = read_until(proc, lambda e: e["type"] == "step_progress")
        web.kill()
        web = start_web(base_env, tmp_path, "web-2", port=port)
        rest, stderr = finish(proc)
        events += json_lines(rest)
    finally:
        web.kill()
    assert proc.returncode == 0, stderr
    assert "reconnecting after" in stderr
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))  # each once
    assert events[-1]["type"] == "run_finished" and events[-1]["status"] == "succeeded"


def test_the_live_view_draws_a_bar_per_running_step() -> None:
    out = io.StringIO()
    view = RunView(Console(file=out, force_terminal=True, width=100, color_system=None))
    with view:
        view.show({"type": "step_started", "step": "a", "attempt": 1})
        view.show({"type": "step_started", "step": "b", "attempt": 2})
        view.show({"type": "step_progress", "step": "a", "progress": 0.5, "message": "half"})
        bars = {t.fields["step"]: t for t in view.progress.tasks}
        assert set(bars) == {"a", "b (attempt 2)"}
        assert bars["a"].percentage == 50 and bars["a"].fields["note"] == "half"
        view.show({"type": "step_finished", "step": "a", "attempt": 1, "status": "succeeded",
                   "duration_ms": 1500.0, "message": ""})  # fmt: skip
        assert [t.fields["step"] for t in view.progress.tasks] == ["b (attempt 2)"]
        view.show({"type": "run_finished", "status": "failed", "message": "step b failed"})
    assert "✔ a succeeded in 1.5 s" in out.getvalue()
    assert "run failed: step b failed" in out.getvalue()
    assert view.status == "failed"
