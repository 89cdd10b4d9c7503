"""``make up``: Redis, one Celery worker, the web server and Flower, in the foreground.

Run as ``python -m devtools.up`` from the repository root (``--check`` prints what it
would run and starts nothing). Redis is ``STEPSTREAM_REDIS_URL`` when set, else a Redis
already answering on 127.0.0.1:6379, else an embedded redis-server that keeps its data
in ``.stepstream/redis`` and is stopped on exit. The other services run under honcho,
their output interleaved with coloured prefixes; Ctrl-C stops them all and exits 0.
"""

from __future__ import annotations

import argparse
import os
import queue
import shlex
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from honcho.manager import Manager
from honcho.printer import Printer

from devtools.redis_server import (
    HOST,
    RedisServer,
    RedisServerError,
    answers_ping,
    find_redis_server,
    free_port,
    port_is_free,
)

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = ROOT / ".stepstream" / "redis"
#: The MCP servers `make up` offers unless STEPSTREAM_MCP_CONFIG names others.
MCP_CONFIG = ROOT / "mcp.yaml"
REDIS_PORT = 6379
WEB_PORT = 8000
FLOWER_PORT = 5555
API_URL = f"http://{HOST}:{WEB_PORT}/api/scenarios"
UI_URL = f"http://{HOST}:{WEB_PORT}/"
FLOWER_URL = f"http://{HOST}:{FLOWER_PORT}"
#: Extra seconds, past the worker's own shutdown grace, before stragglers are killed.
KILL_MARGIN_S = 10.0
#: Each stops everything cleanly; SIGHUP is the terminal closing under ``make up``.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@dataclass(frozen=True)
class RedisChoice:
    """Which Redis the services use, and whether ``make up`` has to start it."""

    url: str
    #: Said in the banner: where the URL came from.
    source: str
    #: Set when the embedded server must be started, on this port.
    embedded_port: int | None = None


def choose_redis(env: Mapping[str, str]) -> RedisChoice:
    url = env.get("STEPSTREAM_REDIS_URL", "").strip()
    if url:
        return RedisChoice(url, "from STEPSTREAM_REDIS_URL")
    if answers_ping(HOST, REDIS_PORT):
        return RedisChoice(
            f"redis://{HOST}:{REDIS_PORT}/0", f"the Redis already running on {HOST}:{REDIS_PORT}"
        )
    # Something that is not a usable Redis may hold 6379 (a password-protected one, say).
    port = REDIS_PORT if port_is_free(REDIS_PORT) else free_port()
    try:
        binary = find_redis_server(prefer_packaged=True)
    except RedisServerError as exc:
        binary = f"(not found: {exc})"
    source = f"embedded redis-server {binary}, data in {_shown(DATA_DIR)}, stopped on exit"
    return RedisChoice(f"redis://{HOST}:{port}/0", source, embedded_port=port)


def service_commands(bin_dir: Path) -> dict[str, list[str]]:
    """The services honcho runs, each with the executables of this interpreter's venv."""
    celery = str(bin_dir / "celery")
    gunicorn = str(bin_dir / "gunicorn")
    return {
        "worker": [
            celery, "-A", "worker", "worker",
            "--loglevel=INFO", "--concurrency=2", "-n", "worker1@%h",
        ],
        "web": [
            gunicorn, "--config", "gunicorn.conf.py",
            "--bind", f"{HOST}:{WEB_PORT}", "web:create_app()",
        ],
        "flower": [
            celery, "-A", "worker", "flower", f"--address={HOST}", f"--port={FLOWER_PORT}",
        ],
    }  # fmt: skip


class Supervisor(Manager):  # type: ignore[misc]
    """honcho's Manager, with the shutdown a Celery worker needs.

    Stock honcho SIGTERMs each process group and SIGKILLs it 5 s later. That group holds
    the worker's pool children, which must be left to the worker: on SIGTERM it lets
    running steps finish for up to ``STEPSTREAM_SHUTDOWN_GRACE_S`` and hands the rest
    back for resuming. So here SIGTERM goes to each service's main process only (its
    command is ``exec``-ed, so that is the service itself), the group is SIGKILLed only
    after ``kill_wait`` seconds or on a second Ctrl-C, and a stop asked for by a signal
    is a success while a service dying on its own is a failure.
    """

    def __init__(self, kill_wait: float, printer: Printer | None = None) -> None:
        super().__init__(printer)
        self.kill_wait = kill_wait
        #: Set by the first stop signal (SIGINT, SIGTERM or SIGHUP).
        self.interrupted = False
        self._deadline: float | None = None
        self._killed = False
        self._failed_rc: int | None = None
        self._signals: list[signal.Signals] = []

    def loop(self) -> int:
        """Run every process until all have stopped; return the exit status for ``make``."""
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._on_signal)
        self._start()
        relays = [p["process"] for p in self._processes.values()]
        while True:
            # A relay exits only after its last message is in the queue: once all are
            # gone before a read, an empty read means everything has been printed.
            relays_alive = any(relay.is_alive() for relay in relays)
            try:
                msg = self.events.get(timeout=0.1)
            except queue.Empty:
                if not relays_alive:
                    break
            else:
                self._handle(msg)
            while self._signals:
                self._react(self._signals.pop(0))
            if self._any_stopped():
                self._shut_down()
            if (
                self._deadline is not None
                and not self._killed
                and time.monotonic() > self._deadline
            ):
                self._system_print(f"still running {self.kill_wait:g} s after SIGTERM\n")
                self.kill()
        for relay in relays:
            relay.join()
        # Nothing of a service may outlive make up (a pool child whose parent died, say).
        self._signal_groups(signal.SIGKILL, quiet=True)
        if self.interrupted:
            return 0
        return self._failed_rc or 1

    def kill(self) -> None:
        self._killed = True
        self._signal_groups(signal.SIGKILL)

    def _handle(self, msg: Any) -> None:
        if msg.type == "line":
            self._printer.write(msg)
        elif msg.type == "start":
            pid = msg.data["pid"]
            self._processes[msg.name]["pid"] = pid
            self._system_print(f"{msg.name} started (pid={pid})\n")
            if self._deadline is not None:  # started after the shutdown began
                _send(pid, signal.SIGTERM, group=False)
        elif msg.type == "stop":
            rc = msg.data["returncode"]
            self._processes[msg.name]["returncode"] = rc
            self._system_print(f"{msg.name} stopped (rc={rc})\n")
            if self._deadline is None and self._failed_rc is None:
                self._failed_rc = rc if rc > 0 else 1

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Only note it: printing from a handler can hit a write already under way.
        self._signals.append(signal.Signals(signum))

    def _react(self, signum: signal.Signals) -> None:
        if not self.interrupted:
            self.interrupted = True
            self._system_print(f"{signum.name} received, stopping (Ctrl-C again to kill)\n")
            self._shut_down()
        elif not self._killed:
            self._system_print(f"{signum.name} received again, killing\n")
            self.kill()

    def _shut_down(self) -> None:
        if self._deadline is not None:
            return
        self._deadline = time.monotonic() + self.kill_wait
        self._terminating = True
        for name, p in self._processes.items():
            if "returncode" not in p and p.get("pid") is not None:
                self._system_print(f"sending SIGTERM to {name} (pid {p['pid']})\n")
                _send(p["pid"], signal.SIGTERM, group=False)

    def _signal_groups(self, signum: signal.Signals, quiet: bool = False) -> None:
        for name, p in self._processes.items():
            if p.get("pid") is None:
                continue
            if not quiet and "returncode" not in p:
                self._system_print(f"sending {signum.name} to {name} (pid {p['pid']})\n")
            _send(p["pid"], signum, group=True)


class _Output:
    """stdout that shrugs off a closed terminal or pipe, so shutdown still completes."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._broken = False

    def write(self, text: str) -> int:
        if not self._broken:
            try:
                self._stream.write(text)
                self._stream.flush()
            except (OSError, ValueError):
                self._broken = True
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        try:
            return self._stream.isatty()
        except (OSError, ValueError):
            return False


def _send(pid: int, signum: signal.Signals, *, group: bool) -> None:
    try:
        # honcho starts each service in a session of its own: pid == its process group.
        if group:
            os.killpg(pid, signum)
        else:
            os.kill(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _kill_wait(env: Mapping[str, str]) -> float:
    try:
        grace = float(env.get("STEPSTREAM_SHUTDOWN_GRACE_S", "30"))
    except ValueError:
        grace = 30.0
    return max(grace, 0.0) + KILL_MARGIN_S


def _banner(choice: RedisChoice) -> str:
    return "\n".join(
        [
            "stepstream is starting:",
            f"  API     {API_URL}",
            f"  UI      {UI_URL}",
            f"  Flower  {FLOWER_URL}",
            f"  Redis   {choice.url}  ({choice.source})",
            "Ctrl-C stops everything.",
            "",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.up",
        description="Run Redis, a Celery worker, the web server and Flower (make up).",
    )
    parser.add_argument(
        "--check", action="store_true", help="print the Redis URL and the commands; start nothing"
    )
    args = parser.parse_args(argv)

    # Until the supervisor takes over the signals, they unwind like Ctrl-C, via `finally`.
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.default_int_handler)
    choice = choose_redis(os.environ)
    commands = service_commands(Path(sys.executable).parent)
    if args.check:
        print(f"redis: {choice.url}")
        print(f"redis source: {choice.source}")
        print(f"mcp config: {os.environ.get('STEPSTREAM_MCP_CONFIG') or MCP_CONFIG}")
        for name, command in commands.items():
            print(f"{name}: {shlex.join(command)}")
        return 0

    busy = [port for port in (WEB_PORT, FLOWER_PORT) if not port_is_free(port)]
    if busy:
        ports = ", ".join(f"{HOST}:{port}" for port in busy)
        print(f"error: {ports} already in use (is another `make up` running?)", file=sys.stderr)
        return 1

    server: RedisServer | None = None
    try:
        if choice.embedded_port is not None:
            server = RedisServer(
                choice.embedded_port,
                data_dir=DATA_DIR,
                appendonly=True,
                executable=find_redis_server(prefer_packaged=True),
            ).start()
        out = _Output(sys.stdout)
        out.write(_banner(choice) + "\n")
        env = dict(os.environ, STEPSTREAM_REDIS_URL=choice.url, PYTHONUNBUFFERED="1")
        env.setdefault("STEPSTREAM_MCP_CONFIG", str(MCP_CONFIG))
        supervisor = Supervisor(_kill_wait(os.environ), Printer(out))
        for name, command in commands.items():
            supervisor.add_process(name, "exec " + shlex.join(command), env=env, cwd=str(ROOT))
        return supervisor.loop()
    except RedisServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        if server is not None:
            server.stop()
            _Output(sys.stdout).write(
                f"embedded redis-server stopped (data kept in {_shown(DATA_DIR)})\n"
            )


if __name__ == "__main__":
    sys.exit(main())
