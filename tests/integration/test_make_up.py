"""``make up`` as a newcomer meets it: ``python -m devtools.up`` in a process of its own,
with its real redis-server, worker, web and Flower, on ports of the test's choosing.

Every test waits on the output or on the API's answers, with a deadline; none sleeps.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from devtools.processes import default_signals
from devtools.redis_server import RedisServer, free_port
from tasks import keys

ROOT = Path(__file__).resolve().parents[2]
#: Starting four services on a loaded machine can take a while.
START_TIMEOUT_S = 90.0
TOKEN = "make-up-test-token"

pytestmark = pytest.mark.slow


class Up:
    """A running ``python -m devtools.up``, its output read line by line."""

    def __init__(self, proc: subprocess.Popen[str], web: str) -> None:
        self.proc = proc
        self.web = web
        self.seen: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        assert proc.stdout is not None
        stdout = proc.stdout

        def pump() -> None:
            for line in stdout:
                self._queue.put(line)
            self._queue.put(None)

        threading.Thread(target=pump, daemon=True).start()

    @property
    def output(self) -> str:
        return "".join(self.seen)

    def wait_for(
        self, pattern: str, count: int = 1, timeout: float = START_TIMEOUT_S
    ) -> list[re.Match[str]]:
        """The first ``count`` matches of ``pattern`` in the output so far, waiting for
        more lines until there are that many."""
        deadline = time.monotonic() + timeout
        while True:
            matches = [m for m in map(re.compile(pattern).search, self.seen) if m]
            if len(matches) >= count:
                return matches[:count]
            try:
                line = self._queue.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                line = None
            if line is None:
                raise AssertionError(f"no {count} x {pattern!r} in:\n{self.output}")
            self.seen.append(line)

    def finish(self, timeout: float = 90) -> int:
        """Wait for the exit and the last of the output; the exit status."""
        rc = self.proc.wait(timeout=timeout)
        while (line := self._queue.get(timeout=10)) is not None:
            self.seen.append(line)
        return rc

    def ready(self) -> str:
        return self.wait_for(r"stepstream ready at .*")[0][0]


def _get(url: str, **kwargs: Any) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=5, **kwargs)
    except httpx.HTTPError:
        return None


def until(check: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    """``check()``'s first truthy answer, asked until ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        answer = check()
        if answer:
            return answer
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)  # polling the API for a state the test waits on


def submit(up: Up, scenario_id: str, headers: dict[str, str] | None = None) -> str:
    response = httpx.post(
        f"{up.web}/api/runs", json={"scenario_id": scenario_id}, headers=headers, timeout=10
    )
    assert response.status_code in (200, 201, 202), response.text
    run_id: str = response.json()["run_id"]
    return run_id


def run_of(up: Up, run_id: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    response = _get(f"{up.web}/api/runs/{run_id}", headers=headers)
    assert response is not None and response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def a_step_running(up: Up, run_id: str) -> bool:
    return any(s["status"] == "running" for s in run_of(up, run_id)["steps"])


def finished(up: Up, run_id: str, headers: dict[str, str] | None = None) -> dict[str, Any] | None:
    run = run_of(up, run_id, headers)
    return run if run["status"] in ("succeeded", "failed", "cancelled") else None


@pytest.fixture
def scenarios(tmp_path: Path) -> Path:
    """A scenario whose one step runs for a minute, and one calling the test plugin."""
    directory = tmp_path / "scenarios"
    directory.mkdir()
    (directory / "long_step.yaml").write_text(
        textwrap.dedent(
            """\
            schema_version: "1"
            scenario_id: long_step
            name: Long step
            steps:
              - name: nap
                tool: sleep
                input: {seconds: 60, ticks: 60}
            """
        )
    )
    (directory / "hello.yaml").write_text(
        textwrap.dedent(
            """\
            schema_version: "1"
            scenario_id: hello
            name: Hello
            steps:
              - name: greet
                tool: echo
                input: {who: test}
            """
        )
    )
    return directory


@pytest.fixture
def start_up(tmp_path: Path, scenarios: Path) -> Iterator[Callable[..., Up]]:
    started: list[Up] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Up:
        web_port, flower_port = free_port(), free_port()
        environment = {k: v for k, v in os.environ.items() if not k.startswith("STEPSTREAM_")}
        environment.update(
            STEPSTREAM_SCENARIOS_DIR=str(scenarios),
            STEPSTREAM_HEARTBEAT_S="1",
            PYTHONUNBUFFERED="1",
        )
        environment.update(env or {})
        command = [sys.executable, "-m", "devtools.up", "--web-port", str(web_port)]
        command += ["--flower-port", str(flower_port), "--data-dir", str(tmp_path / "redis")]
        proc = subprocess.Popen(
            [*command, *args],
            cwd=ROOT,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=default_signals,  # signalled as from a terminal, however we started
        )
        up = Up(proc, f"http://127.0.0.1:{web_port}")
        started.append(up)
        return up

    yield start
    for up in started:
        if up.proc.poll() is None:
            up.proc.send_signal(signal.SIGINT)
            up.proc.send_signal(signal.SIGINT)
            try:
                up.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                up.proc.kill()
                up.proc.wait()


def test_the_ready_line_comes_last_and_the_services_use_their_own_redis(
    start_up: Callable[..., Up], tmp_path: Path
) -> None:
    with RedisServer(data_dir=tmp_path / "other") as other:
        # Another app's Redis answers on the port make up is asked to prefer.
        up = start_up(
            "--redis-port", str(other.port), "--no-reload", env={"STEPSTREAM_API_TOKEN": TOKEN}
        )
        ready = up.ready()
        port = re.search(r"ready at http://127\.0\.0\.1:(\d+)", ready)
        assert port is not None and up.web.endswith(f":{port[1]}")
        assert re.fullmatch(
            r"stepstream ready at http://127\.0\.0\.1:\d+ — 1 worker, auth on, "
            r"Flower at http://127\.0\.0\.1:\d+",
            ready,
        )
        own = up.wait_for(r"Redis (redis://127\.0\.0\.1:(\d+)/0) \(embedded")[0]
        assert int(own[2]) != other.port

        # The worker was given make up's own Redis, not the other.
        worker_pid = int(up.wait_for(r"worker started \(pid=(\d+)\)")[0][1])
        environ = Path(f"/proc/{worker_pid}/environ").read_bytes().split(b"\0")
        assert f"STEPSTREAM_REDIS_URL={own[1]}".encode() in environ
        client = redis.Redis.from_url(own[1])
        assert client.info("server")["process_id"] != other.pid
        assert client.hlen(keys.workers()) == 1  # the worker's heartbeat is there
        client.close()

        up.proc.send_signal(signal.SIGINT)
        assert up.finish() == 0
        # The worker's heartbeat and the web wrote to a Redis: not to that one.
        other_client = redis.Redis.from_url(other.url)
        assert other_client.info("keyspace") == {}  # not one key, in any database
        other_client.close()
    # Nothing came after the ready line until the Ctrl-C.
    lines = up.output.splitlines()
    at = next(i for i, line in enumerate(lines) if "stepstream ready at" in line)
    assert "SIGINT received" in lines[at + 1], up.output
    assert "Traceback" not in up.output


def test_ctrl_c_counts_down_hands_a_long_step_back_and_exits_0(
    start_up: Callable[..., Up],
) -> None:
    up = start_up("--no-reload", env={"STEPSTREAM_SHUTDOWN_GRACE_S": "3"})
    up.ready()
    run_id = submit(up, "long_step")
    until(lambda: a_step_running(up, run_id), "the step to run")

    up.proc.send_signal(signal.SIGINT)
    up.wait_for(r"stopping: waiting for 1 running step \(\d+ s\)…")
    assert up.finish() == 0
    assert "handed 1 running step back after 3 s" in up.output
    assert "Traceback" not in up.output and "WorkerLostError" not in up.output, up.output


def test_a_second_ctrl_c_hands_the_step_back_at_once(start_up: Callable[..., Up]) -> None:
    up = start_up("--no-reload", env={"STEPSTREAM_SHUTDOWN_GRACE_S": "120"})
    up.ready()
    run_id = submit(up, "long_step")
    until(lambda: a_step_running(up, run_id), "the step to run")

    up.proc.send_signal(signal.SIGINT)
    up.wait_for(r"stopping: waiting for 1 running step")
    began = time.monotonic()
    up.proc.send_signal(signal.SIGINT)
    assert up.finish(timeout=60) == 0
    assert time.monotonic() - began < 30  # not the 120 s grace
    assert "handed 1 running step back at once" in up.output
    assert "Traceback" not in up.output, up.output


def test_a_worker_that_dies_is_restarted_and_the_web_stays_up(
    start_up: Callable[..., Up],
) -> None:
    up = start_up("--no-reload")
    up.ready()
    pid = int(up.wait_for(r"worker started \(pid=(\d+)\)")[0][1])
    os.kill(pid, signal.SIGKILL)

    up.wait_for(r"worker exited on its own \(killed by SIGKILL\); restarting it in \d+ s")
    new_pid = int(up.wait_for(r"worker started \(pid=(\d+)\)", count=2)[1][1])
    assert new_pid != pid
    health = _get(f"{up.web}/healthz")
    assert health is not None and health.status_code == 200
    run_id = submit(up, "hello")
    run = until(lambda: finished(up, run_id), "a run on the new worker")
    assert run["status"] == "succeeded"
    assert "web stopped" not in up.output and "flower stopped" not in up.output

    up.proc.send_signal(signal.SIGINT)
    assert up.finish() == 0


PLUGIN_V1 = """
from tasks.tools.registry import tool

@tool("dev_greeting", description="Says which version it is.", input_schema={"type": "object"})
def dev_greeting(ctx, /):
    return {"version": "one"}
"""


def test_dev_mode_restarts_the_worker_when_a_tool_changes(
    start_up: Callable[..., Up], tmp_path: Path, scenarios: Path
) -> None:
    # A tool plugin as an editable install makes one: a module, and a dist-info
    # declaring its entry point, on the path.
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    module = plugins / "dev_plugin.py"
    module.write_text(PLUGIN_V1)
    dist_info = plugins / "dev_plugin-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: dev-plugin\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text(
        "[stepstream.tools]\ndev_greeting = dev_plugin:dev_greeting\n"
    )
    (scenarios / "greeting.yaml").write_text(
        'schema_version: "1"\nscenario_id: greeting\nname: Greeting\n'
        "steps:\n  - name: greet\n    tool: dev_greeting\n    input: {}\n"
    )
    up = start_up(env={"PYTHONPATH": str(plugins)})
    up.wait_for(r"reloading on changes to Python files in .*dev_plugin\.py")
    up.ready()
    first_id = submit(up, "greeting")
    first = until(lambda: finished(up, first_id), "the first run")
    assert first["status"] == "succeeded", first
    assert first["steps"][0]["output"] == {"version": "one"}

    module.write_text(module.read_text().replace('"one"', '"two"'))
    up.wait_for(r"restarting worker \(.*dev_plugin\.py changed\)")
    up.wait_for(r"worker started \(pid=\d+\)", count=2)
    second_id = submit(up, "greeting")
    second = until(lambda: finished(up, second_id), "the second run")
    assert second["status"] == "succeeded", second
    assert second["steps"][0]["output"] == {"version": "two"}

    up.proc.send_signal(signal.SIGINT)
    assert up.finish() == 0
    assert "Traceback" not in up.output, up.output
