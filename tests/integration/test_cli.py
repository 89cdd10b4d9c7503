"""The `stepstream` console script against a real server and worker.

Most commands run in-process through click's runner; interrupts and reconnects run
the installed console script as a real process, sending it SIGINT or killing the web
server under it.
"""

from __future__ import annotations

import io
import json
import re
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
from werkzeug.wrappers import Request, Response

from client.cli import main
from client.live_view import RunView
from client.sse import SSEDecoder, SSEMessage, sse_lines
from devtools.processes import default_signals

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
    # Then how it ended: the last step's output, and the run's page.
    assert "run succeeded" in lines and lines[-2].startswith('{"compose": ')
    assert re.fullmatch(rf"run succeeded: {re.escape(live_server.url)}/runs/\S+", lines[-1])
    assert re.search(
        rf"run (\S+) queued: {re.escape(live_server.url)}/runs/\1$", result.stderr, re.M
    )


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
    events = json_lines(result.stdout)  # stderr ends with the run's output
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["type"] == "run_finished"
    run_id = events[0]["run_id"]

    tail = cli(live_server, "tail", run_id, "--json", "--after", events[2]["id"])
    assert tail.exit_code == 0
    assert json_lines(tail.output) == events[3:]
    assert cli(live_server, "tail", run_id, "--json").exit_code == 0  # from the start
    # From its last event: nothing to print, and the run's own status is the exit code.
    at_end = cli(live_server, "tail", run_id, "--json", "--after", events[-1]["id"])
    assert (at_end.exit_code, at_end.output) == (0, "")


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
        # Whatever this suite was started with (`nohup`, a script's background job),
        # the CLI reacts to the SIGINT it is sent as from a terminal.
        preexec_fn=default_signals,
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


@pytest.mark.parametrize(
    "cancel",
    [
        pytest.param(False, id="run-goes-on", marks=pytest.mark.slow),  # the run's 3 s
        pytest.param(True, id="cancel-on-interrupt"),
    ],
)
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


@pytest.mark.slow
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
        view.show(
            {
                "type": "step_finished",
                "step": "a",
                "attempt": 1,
                "status": "succeeded",
                "duration_ms": 1500.0,
                "message": "",
            }
        )
        assert [t.fields["step"] for t in view.progress.tasks] == ["b (attempt 2)"]
        view.show({"type": "run_finished", "status": "failed", "message": "step b failed"})
    assert "✔ a succeeded in 1.5 s" in out.getvalue()
    assert "run failed: step b failed" in out.getvalue()
    assert view.status == "failed"


# -- hostile data --------------------------------------------------------------------------

#: Rich markup that would crash or restyle the output, a trailing backslash, and the
#: characters `str.splitlines` breaks at although SSE does not.
HOSTILE = "[bold [/] [/red] x\u2028y\u2029z\u0085w\x1cv\x0bu\x0c \\"


def sse_stream(*events: tuple[str, str]) -> bytes:
    """The stream a hostile server sends: every kind of line end, comments, split data."""
    out = [": stream open\r\n\r\n"]
    for n, (kind, data) in enumerate(events, 1):
        eol = ("\n", "\r", "\r\n")[n % 3]
        lines = [f"id: 1-{n}", f"event: {kind}", *(f"data: {part}" for part in data.split("\n"))]
        out.append(eol.join([*lines, ": a comment", "", ""]))
    return "".join(out).encode()


def event_json(kind: str, seq: int, **fields: Any) -> str:
    return json.dumps(
        {"schema_version": 1, "type": kind, "run_id": "r", "seq": seq, **fields, "id": f"1-{seq}"},
        ensure_ascii=False,
    )


HOSTILE_EVENTS = sse_stream(
    ("run_started", event_json("run_started", 1, scenario_id="s", worker=HOSTILE)),
    ("step_started", event_json("step_started", 2, step="a", attempt=1, tool="echo")),
    # Two data lines: joined with LF, which JSON reads as whitespace.
    (
        "step_log",
        event_json("step_log", 3, step="a", attempt=1, message=HOSTILE).replace(
            ',"seq"', ',\n"seq"'
        ),
    ),
    ("step_log", '{"schema_version": 1, "type": "step_log", broken'),
    (
        "step_progress",
        event_json("step_progress", 5, step="a", attempt=1, progress=0.5, message="LONE")
        .replace("0.5", "NaN")
        .replace("LONE", "\\ud800"),  # a JSON escape of a lone surrogate
    ),
    (
        "step_finished",
        event_json(
            "step_finished",
            6,
            step="a",
            attempt=1,
            status="succeeded",
            duration_ms=3.0,
            message=HOSTILE,
            output=None,
        ),
    ),
    ("run_finished", event_json("run_finished", 7, status="succeeded", message=HOSTILE)),
)


def hostile_api(request_environ: dict[str, Any], start_response: Any) -> Any:
    """A server whose every answer carries hostile text, over real HTTP."""
    request = Request(request_environ)
    answers: dict[str, Any] = {
        "/api/scenarios": [{"scenario_id": HOSTILE, "name": HOSTILE, "step_count": 1}],
        "/api/scenarios/problems": [{"path": HOSTILE, "scenario_id": None, "reason": HOSTILE}],
        "/api/tools": [
            {
                "name": HOSTILE,
                "description": HOSTILE,
                "source": HOSTILE,
                "available": False,
                "error": HOSTILE,
            }
        ],
        "/api/workers": [
            {
                "name": HOSTILE,
                "status": HOSTILE,
                "last_heartbeat": HOSTILE,
                "active_runs": HOSTILE,
                "processed": 1,
            }
        ],
        "/api/runs": {
            "runs": [
                {
                    "run_id": HOSTILE,
                    "status": HOSTILE,
                    "scenario_id": HOSTILE,
                    "created_at": HOSTILE,
                }
            ],
            "next_before": None,
        },
        "/api/runs/r/cancel": {"run_id": "r"},
        "/api/tools/refresh": {"status": HOSTILE},
    }
    if request.path == "/api/runs/r/events":
        # Cut into 7-byte chunks: CRLFs and UTF-8 sequences split between two reads.
        chunks = [HOSTILE_EVENTS[i : i + 7] for i in range(0, len(HOSTILE_EVENTS), 7)]
        response = Response(chunks, mimetype="text/event-stream")
    elif request.path in answers:
        response = Response(json.dumps(answers[request.path]), mimetype="application/json")
    else:
        body = {"error": {"code": "not_found", "message": HOSTILE, "details": [HOSTILE]}}
        response = Response(json.dumps(body), status=404, mimetype="application/json")
    return response(request_environ, start_response)


@pytest.fixture(scope="module")
def hostile_server() -> Any:
    with serve(hostile_api) as server:
        yield server


@pytest.mark.parametrize("command", [["scenarios"], ["tools", "--refresh"], ["workers"], ["runs"]])
def test_tables_show_hostile_text_as_text(hostile_server: LiveServer, command: list[str]) -> None:
    result = cli(hostile_server, *command)
    assert result.exit_code == 0, result.output
    assert "[bold [/] [/red]" in result.output


def test_follow_survives_a_hostile_event_stream(hostile_server: LiveServer) -> None:
    """Lines end only at CR, LF or CRLF; data lines join; an unreadable event is reported
    and skipped; NaN and lone surrogates are shown replaced; markup is shown as text."""
    result = cli(hostile_server, "tail", "r", "--json")
    assert result.exit_code == 0, result.output
    events = json_lines(result.stdout)
    assert [e["seq"] for e in events] == [1, 2, 3, 5, 6, 7]
    assert events[0]["worker"] == events[2]["message"] == events[5]["message"] == HOSTILE
    assert events[3]["progress"] is None and events[3]["message"] == "\ufffd"
    assert "skipped event 1-4: not JSON" in result.stderr

    shown = cli(hostile_server, "tail", "r")
    assert shown.exit_code == 0, shown.output
    assert "skipped event 1-4" in shown.stderr
    assert "run succeeded: [bold [/] [/red] x" in shown.stdout
    assert "✔ a succeeded in 3 ms — [bold [/] [/red]" in shown.stdout


def test_errors_with_hostile_text_are_printed_as_they_are(hostile_server: LiveServer) -> None:
    result = cli(hostile_server, "show", "nope")
    assert result.exit_code == 1
    assert "404: [bold [/] [/red]" in result.output


def test_hostile_messages_from_a_real_run(live_server: LiveServer, worker: WorkerProcess) -> None:
    """U+2028 and markup in a failure message, through the real server, both views."""
    reason = json.dumps({"reason": HOSTILE})
    result = cli(live_server, "run", "failing_step", "--input", reason, "--follow", "--json")
    assert result.exit_code == 1, result.output
    finished = [e for e in json_lines(result.stdout) if e["type"] == "step_finished"]
    assert HOSTILE in [e["message"] for e in finished]
    shown = cli(live_server, "tail", finished[0]["run_id"])
    assert shown.exit_code == 1, shown.output
    assert "✘ explode failed" in shown.stdout and "[bold [/] [/red] x" in shown.stdout


def test_global_options_before_or_after_the_command(
    app_factory: Callable[..., Any], worker: WorkerProcess
) -> None:
    with serve(app_factory(api_token="s3cret")) as server:
        runner = CliRunner()
        after = runner.invoke(main, ["runs", "--url", server.url, "--token", "s3cret"])
        assert after.exit_code == 0, after.output
        mixed = runner.invoke(
            main,
            [
                "--url",
                server.url,
                "run",
                "hello_sequence",
                "-i",
                "name=x",
                "--follow",
                "--token",
                "s3cret",
            ],
        )
        assert mixed.exit_code == 0, mixed.output
        # Given both before and after the command, the one after it wins.
        wrong = runner.invoke(
            main,
            [
                "--url",
                "http://127.0.0.1:9",
                "--token",
                "nope",
                "runs",
                "--url",
                server.url,
                "--token",
                "s3cret",
            ],
        )
        assert wrong.exit_code == 0, wrong.output
        refused = runner.invoke(
            main, ["--token", "s3cret", "runs", "--url", server.url, "--token", "wrong"]
        )
        assert refused.exit_code == 1 and "401" in refused.output


# -- the SSE reader, on its own ------------------------------------------------------------


def messages(data: bytes, size: int) -> tuple[list[SSEMessage], SSEDecoder]:
    decoder = SSEDecoder()
    chunks = [data[i : i + size] for i in range(0, len(data), size)]
    return list(decoder.messages(chunks)), decoder


@pytest.mark.parametrize("size", [1, 2, 3, 1000])
def test_sse_reader_follows_the_whatwg_rules(size: int) -> None:
    stream = (
        "\ufeffdata: first\r\n\r\n"  # a BOM is dropped; CRLF ends lines
        "data:no space\rdata:  two spaces\r\r"  # CR alone; one leading space is removed
        ": a comment\nid: 7\nevent: custom\ndata\ndata: \u2028\u2029\u0085\x0b\x1c\n\n"
        "retry: 1500\nretry: 2x\nid: bad\x00id\nunknown: field\ndata: later\n\n"
        "id: 8\n\n"  # no data: nothing is dispatched, but the id is kept
        "data: a\n\ndata: cut off at the end\n"
    ).encode()
    got, decoder = messages(stream, size)
    assert got == [
        SSEMessage("first"),
        SSEMessage("no space\n two spaces"),
        SSEMessage("\n\u2028\u2029\u0085\x0b\x1c", "custom", "7"),
        SSEMessage("later", "message", "7"),
        SSEMessage("a", "message", "8"),
    ]
    assert decoder.retry_ms == 1500 and decoder.last_event_id == "8"


def test_sse_lines_split_only_at_cr_and_lf() -> None:
    data = "a\u2028b\r\nc\u0085d\re\x0cf\ng\r".encode()
    assert list(sse_lines([data])) == ["a\u2028b", "c\u0085d", "e\x0cf", "g"]
    assert list(sse_lines([data[:-1]])) == ["a\u2028b", "c\u0085d", "e\x0cf"]  # "g" unfinished
    assert list(sse_lines([b"x\r", b"\ny\r", b"\r"])) == ["x", "y", ""]  # CRLF split in two
    assert list(sse_lines([b"\xe2\x80", b"\xa8\xff\n"])) == ["\u2028\ufffd"]


def test_scenarios_lists_the_files_left_out(
    app_factory: Callable[..., Any], tmp_path: Path
) -> None:
    good = 'schema_version: "1"\nscenario_id: {}\nname: N\nsteps: [{{name: a, tool: echo}}]\n'
    (tmp_path / "good.yaml").write_text(good.format("good"))
    (tmp_path / "twin_a.yaml").write_text(good.format("twin"))
    (tmp_path / "twin_b.yaml").write_text(good.format("twin"))
    (tmp_path / "broken.yaml").write_text("steps: [\n")
    with serve(app_factory(scenarios_dir=tmp_path)) as server:
        result = cli(server, "scenarios")
    assert result.exit_code == 0, result.output
    assert any(line.split()[:1] == ["good"] for line in result.output.splitlines())
    # Long paths may wrap at the terminal's width: compare without whitespace.
    text = "".join(result.output.split())
    for expected in (
        "3 scenario files left out:",
        f"{tmp_path / 'twin_a.yaml'}: duplicate scenario_id 'twin' (also in twin_b.yaml)",
        f"{tmp_path / 'twin_b.yaml'}: duplicate scenario_id 'twin' (also in twin_a.yaml)",
        f"{tmp_path / 'broken.yaml'}: invalid YAML",
    ):
        assert "".join(expected.split()) in text, result.output
