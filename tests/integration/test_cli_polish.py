"""The command line's first-hour polish against a real server: its tables fit an
80-column terminal, one line per row, and `run --follow` ends with what the run gave
and its page."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from click.testing import CliRunner, Result
from clients import submit
from conftest import LiveServer, WorkerProcess, wait_for

from client.cli import main
from client.outcome import last_steps, output_text, run_output
from tasks import keys

#: The command line as a process of its own, from this checkout.
STEPSTREAM = [sys.executable, "-m", "client.cli"]
ROOT = Path(__file__).resolve().parents[2]
LONG = "test_long_names_a_scenario_id_as_long_as_sixty_four_characters_x"


def cli(server: LiveServer, *args: str, columns: int = 80) -> Result:
    return CliRunner(env={"COLUMNS": str(columns)}).invoke(
        main, ["--url", server.url, *args], catch_exceptions=False
    )


def table_lines(output: str) -> list[str]:
    """The table: from its header to the first blank line."""
    lines = output.splitlines()
    return lines[: lines.index("")] if "" in lines else lines


def assert_fits(lines: list[str], width: int = 80) -> None:
    too_wide = [line for line in lines if len(line) > width]
    assert not too_wide, "\n".join(too_wide)


def test_runs_fit_80_columns_one_line_per_run_ids_cut_to_8(live_server: LiveServer) -> None:
    ids = [submit(live_server.url, LONG, {})["run_id"] for _ in range(3)]
    ids.append(submit(live_server.url, "hello_sequence", {"name": "Ada"})["run_id"])
    # A process of its own, as a terminal user runs it.
    done = subprocess.run(
        [*STEPSTREAM, "--url", live_server.url, "runs"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=os.environ | {"COLUMNS": "80"},
        timeout=60,
        check=True,
    )
    lines = done.stdout.splitlines()
    assert_fits(lines)
    assert len(lines) == 1 + len(ids)  # the header, then one line per run
    assert lines[0].split() == ["run", "status", "scenario", "created", "(UTC)"]
    for line, run_id in zip(lines[1:], reversed(ids), strict=True):  # newest first
        assert line.startswith(run_id[:8] + " ") and run_id not in line
    assert any("…" in line and line.split()[2].startswith("test_long_names") for line in lines)
    assert "cut to 8 characters" in done.stderr

    # Wide enough, ids are whole (for copying) and nothing is cut.
    wide = cli(live_server, "runs", columns=140)
    wide_lines = wide.stdout.splitlines()
    assert_fits(wide_lines, 140)
    assert len(wide_lines) == 1 + len(ids)
    assert all(run_id in wide.stdout for run_id in ids)
    assert LONG in wide.stdout and "…" not in wide.stdout and "cut to" not in wide.stderr


def test_scenarios_fit_80_columns_one_line_per_scenario(live_server: LiveServer) -> None:
    listed = httpx.get(f"{live_server.url}/api/scenarios").json()
    result = cli(live_server, "scenarios")
    assert result.exit_code == 0, result.output
    lines = table_lines(result.stdout)
    assert_fits(result.stdout.splitlines())
    assert len(lines) == 1 + len(listed)
    long_row = next(line for line in lines if line.startswith("test_long_names"))
    assert "…" in long_row and long_row.split()[-1].endswith("…")
    assert any(line.startswith("hello_sequence ") and "Hello sequence" in line for line in lines)


def test_workers_fit_80_columns_one_line_per_worker(
    live_server: LiveServer, worker: WorkerProcess, r: redis.Redis
) -> None:
    # A busy worker with a long name, four queues and five steps, as its heartbeat
    # writes it, next to the real one.
    seconds, micros = r.time()
    busy = "a-worker-with-a-long-hostname@build-node-0042.eu-west-1.compute.internal"
    steps = [{"run_id": str(uuid.uuid4()), "step": f"step_{i}", "attempt": 1} for i in range(5)]
    row = {
        "last_heartbeat": float(f"{seconds}.{micros:06d}"),
        "queues": ["stepstream", "gpu", "io-heavy", "reports"],
        "concurrency": 16,
        "busy": 5,
        "current_steps": steps,
        "processed": 123456,
    }
    r.hset(keys.workers(), busy, json.dumps(row))

    def listed() -> list[dict[str, Any]] | None:
        found = httpx.get(f"{live_server.url}/api/workers").json()
        return found if len(found) >= 2 else None

    workers = wait_for(listed, what="the worker's heartbeat row")
    result = cli(live_server, "workers")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert_fits(lines)
    assert len(lines) == 1 + len(workers), result.stdout
    assert lines[0].split()[:2] == ["worker", "status"]
    row_line = next(line for line in lines if line.startswith("a-worker-with"))
    assert "…" in row_line and " ok " in row_line and row_line.rstrip().endswith("123456")
    assert any(" ok " in line and " ago" in line for line in lines[1:])
    # Wide enough, nothing is cut: the steps show as run id prefixes, on the one line.
    wide = cli(live_server, "workers", columns=400).stdout
    assert busy in wide and "…" not in wide
    assert f"{steps[0]['run_id'][:8]} step_0 #1, {steps[1]['run_id'][:8]} step_1 #1" in wide


def ending(result: Result, marker: str = "output:") -> list[str]:
    lines = result.stdout.splitlines()
    return lines[lines.index(marker) :]


def test_run_follow_ends_with_the_last_steps_output_and_the_runs_page(
    live_server: LiveServer, worker: WorkerProcess
) -> None:
    result = cli(live_server, "run", "hello_sequence", "-i", "name=Ada", "--follow")
    assert result.exit_code == 0, result.output
    run_id = result.stderr.split("queued: ")[1].split("/runs/")[1].split()[0]
    snapshot = httpx.get(f"{live_server.url}/api/runs/{run_id}").json()
    compose = next(s for s in snapshot["steps"] if s["name"] == "compose")
    output, text, last = ending(result)
    assert output == "output:"
    # Not a terminal: the output on one line, as JSON.
    assert json.loads(text) == {"compose": compose["output"]}
    assert last == f"run succeeded: {live_server.url}/runs/{run_id}"


def test_every_last_step_gives_its_output(live_server: LiveServer, worker: WorkerProcess) -> None:
    result = cli(live_server, "run", LONG, "--follow")
    assert result.exit_code == 0, result.output
    _, text, last = ending(result)
    assert json.loads(text) == {
        "left": {"side": "left", "text": "hi"},
        "right": {"side": "right"},
    }
    assert last.startswith("run succeeded: ")


def test_run_follow_of_a_failed_run_ends_with_the_failed_steps_message(
    live_server: LiveServer, worker: WorkerProcess
) -> None:
    result = cli(live_server, "run", "failing_step", "-i", "reason=boom", "--follow")
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert "output:" not in lines
    assert lines[-2] == "step explode failed: boom"
    assert lines[-1].startswith("run failed: ") and lines[-1].endswith(
        result.stderr.split("queued: ")[1].split()[0]
    )


def test_run_follow_json_keeps_stdout_to_events(
    live_server: LiveServer, worker: WorkerProcess
) -> None:
    result = cli(live_server, "run", "hello_sequence", "-i", "name=Ada", "--follow", "--json")
    assert result.exit_code == 0
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert events[-1]["type"] == "run_finished"
    errors = result.stderr.splitlines()
    assert "output:" in errors
    assert "compose" in json.loads(errors[errors.index("output:") + 1])
    assert errors[-1] == f"run succeeded: {live_server.url}/runs/{events[0]['run_id']}"


def test_a_big_output_is_cut_with_a_note(live_server: LiveServer, worker: WorkerProcess) -> None:
    result = cli(live_server, "run", "test_big_output", "-i", f"text={'x' * 9000}", "--follow")
    assert result.exit_code == 0, result.output
    _, text, note, last = ending(result)
    assert len(text) <= 4002 and text.endswith(" …")
    assert note.startswith("(output cut: 4,000 of 9,") and "stepstream show " in note
    assert last.startswith("run succeeded: ")


def test_the_output_rules() -> None:
    definition = {
        "steps": [
            {"name": "a", "needs": []},
            {"name": "b", "needs": ["a"]},
            {"name": "c", "needs": ["a"]},
            {"name": "d", "needs": ["b"]},
        ]
    }
    assert last_steps(definition) == ["c", "d"]
    snapshot = {
        "steps": [
            {"name": "a", "status": "succeeded", "output": 1},
            {"name": "b", "status": "succeeded", "output": 2},
            {"name": "c", "status": "skipped", "output": None},
            {"name": "d", "status": "succeeded", "output": {"x": [1]}},
        ]
    }
    assert run_output(snapshot, definition) == {"d": {"x": [1]}}
    assert run_output(snapshot | {"output": {"declared": True}}, definition) == {"declared": True}
    text, note = output_text({"k": list(range(50))}, pretty=True, limit=60)
    assert text.endswith(" …") and "\n" in text and len(text) <= 62
    assert note.startswith("output cut: ")
    assert output_text([1, 2], pretty=False) == ("[1, 2]", "")


@pytest.mark.parametrize("columns", [60, 80, 100])
def test_runs_table_never_wraps_a_row(live_server: LiveServer, columns: int) -> None:
    submit(live_server.url, LONG, {})
    result = cli(live_server, "runs", columns=columns)
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    assert_fits(lines, columns)
