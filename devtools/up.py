"""``make up``: Redis, one Celery worker, the web server and Flower, in the foreground.

Run as ``python -m devtools.up`` from the repository root (``--check`` prints what it
would run and starts nothing). Redis is ``STEPSTREAM_REDIS_URL`` when set, else an
embedded redis-server of its own on a free port, keeping its data in
``.stepstream/redis`` and stopped on exit: never a Redis that merely happens to answer.

The services run under ``devtools.supervisor``: their warnings and errors reach the
terminal, their start-up chatter does not, and one line says when everything answers.
A worker that dies is started again; by default a change to the Python code the
services run (``tasks/``, ``worker/``, ``web/``, tool plugins) restarts the worker and
reloads the web (``--no-reload`` to turn that off). Ctrl-C stops it all, counting down
while running steps finish; a second Ctrl-C hands them back and stops at once.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import socket
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from devtools.redis_server import (
    HOST,
    RedisServer,
    RedisServerError,
    find_redis_server,
    free_port,
    port_is_free,
)
from devtools.supervisor import STOP_SIGNALS, Supervisor
from devtools.terminal import Terminal, foreground

__all__ = ["Supervisor", "main"]

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = ROOT / ".stepstream" / "redis"
#: The MCP servers `make up` offers unless STEPSTREAM_MCP_CONFIG names others.
MCP_CONFIG = ROOT / "mcp.yaml"
WEB_PORT = 8000
FLOWER_PORT = 5555
WORKER_NAME = "worker1@%h"
#: Extra seconds, past the worker's own shutdown grace, before stragglers are killed.
KILL_MARGIN_S = 10.0
#: How long the ready check waits for one answer.
PROBE_TIMEOUT_S = 0.5


@dataclass(frozen=True)
class Ports:
    web: int = WEB_PORT
    flower: int = FLOWER_PORT
    #: The embedded redis-server's, when free; 0: any free port.
    redis: int = 0


@dataclass(frozen=True)
class RedisChoice:
    """Which Redis the services use, and whether ``make up`` has to start it."""

    url: str
    #: Said at start: where the URL came from.
    source: str
    #: Set when the embedded server must be started, on this port.
    embedded_port: int | None = None


def choose_redis(env: Mapping[str, str], port: int = 0, data_dir: Path = DATA_DIR) -> RedisChoice:
    """``STEPSTREAM_REDIS_URL`` if set, else an embedded server on ``port`` if it is
    free and on another free port if not: whatever answers there is not ours."""
    url = env.get("STEPSTREAM_REDIS_URL", "").strip()
    if url:
        return RedisChoice(url, "from STEPSTREAM_REDIS_URL")
    chosen = port if port and port_is_free(port) else free_port()
    try:
        binary = find_redis_server(prefer_packaged=True)
    except RedisServerError as exc:
        binary = f"(not found: {exc})"
    taken = f"; {port} is taken" if port and chosen != port else ""
    source = f"embedded {binary}, data in {_shown(data_dir)}, stopped on exit{taken}"
    return RedisChoice(f"redis://{HOST}:{chosen}/0", source, embedded_port=chosen)


def service_commands(
    python: Path, ports: Ports = Ports(), *, verbose: bool = False
) -> dict[str, list[str]]:
    """The services the supervisor runs, each with this interpreter's venv."""
    bin_dir = python.parent
    worker = [str(python), "-m", "devtools.up_worker", "--name", WORKER_NAME, "--concurrency=2"]
    web = [
        str(bin_dir / "gunicorn"), "--config", "gunicorn.conf.py",
        "--bind", f"{HOST}:{ports.web}",
    ]  # fmt: skip
    flower = [
        str(bin_dir / "celery"), "-A", "worker", "flower",
        f"--address={HOST}", f"--port={ports.flower}",
    ]  # fmt: skip
    if verbose:
        worker.append("--verbose")
    else:
        web.append("--log-level=warning")
        # Flower's warnings are about workers not answering yet while they start.
        flower.append("--logging=error")
    return {"worker": worker, "web": [*web, "web:create_app()"], "flower": flower}


def ready_line(ports: Ports, workers: int, auth: bool) -> str:
    noun = "worker" if workers == 1 else "workers"
    return (
        f"stepstream ready at http://{HOST}:{ports.web} — {workers} {noun}, "
        f"auth {'on' if auth else 'off'}, Flower at http://{HOST}:{ports.flower}"
    )


def probe(ports: Ports, auth: bool) -> str | None:
    """The ready line once the web is ready (``/readyz``: Redis and a live worker) and
    Flower takes connections; None until then."""
    try:
        response = httpx.get(f"http://{HOST}:{ports.web}/readyz", timeout=PROBE_TIMEOUT_S)
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    try:
        with socket.create_connection((HOST, ports.flower), timeout=PROBE_TIMEOUT_S):
            pass
    except OSError:
        return None
    workers = response.json().get("checks", {}).get("workers", 0)
    return ready_line(ports, int(workers), auth)


def route(paths: Sequence[Path]) -> list[str]:
    """The services a change to ``paths`` concerns: web code reloads the web alone;
    anything else (tasks, worker, tool plugins) the worker and the web."""
    web = ROOT / "web"
    if all(p.is_relative_to(web) for p in paths):
        return ["web"]
    return ["worker", "web"]


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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.up",
        description="Run Redis, a Celery worker, the web server and Flower (make up).",
    )
    parser.add_argument(
        "--check", action="store_true", help="print the Redis URL and the commands; start nothing"
    )
    parser.add_argument("--web-port", type=int, default=WEB_PORT, help="default: %(default)s")
    parser.add_argument("--flower-port", type=int, default=FLOWER_PORT, help="default: %(default)s")
    parser.add_argument(
        "--redis-port",
        type=int,
        default=0,
        help="the embedded redis-server's port, if free (default: any free port)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=DATA_DIR,
        help="the embedded redis-server's data (default: .stepstream/redis)",
    )
    parser.add_argument(
        "--no-reload",
        dest="reload",
        action="store_false",
        help="do not restart the worker when Python code changes",
    )
    parser.add_argument(
        "--watch",
        action="append",
        type=Path,
        default=[],
        metavar="DIR",
        help="also restart the worker when Python files under DIR change (repeatable)",
    )
    parser.add_argument(
        "--verbose", action="store_true", help="the services' banners and INFO logs too"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    ports = Ports(args.web_port, args.flower_port, args.redis_port)

    # Until the supervisor takes over the signals, they unwind like Ctrl-C, via `finally`.
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.default_int_handler)
    data_dir = args.data_dir.resolve()
    choice = choose_redis(os.environ, ports.redis, data_dir)
    commands = service_commands(Path(sys.executable), ports, verbose=args.verbose)
    if args.check:
        print(f"redis: {choice.url}")
        print(f"redis source: {choice.source}")
        print(f"mcp config: {os.environ.get('STEPSTREAM_MCP_CONFIG') or MCP_CONFIG}")
        for name, command in commands.items():
            print(f"{name}: {shlex.join(command)}")
        return 0

    busy = [port for port in (ports.web, ports.flower) if not port_is_free(port)]
    if busy:
        taken = ", ".join(f"{HOST}:{port}" for port in busy)
        print(
            f"error: {taken} already in use (is another `make up` running? "
            "--web-port and --flower-port choose others)",
            file=sys.stderr,
        )
        return 1

    out = Terminal(sys.stdout)
    server: RedisServer | None = None
    try:
        if choice.embedded_port is not None:
            server = RedisServer(
                choice.embedded_port,
                data_dir=data_dir,
                appendonly=True,
                executable=find_redis_server(prefer_packaged=True),
            ).start()
        where = "embedded, data in " + _shown(data_dir) if server else "STEPSTREAM_REDIS_URL"
        out.write(f"starting stepstream — Redis {choice.url} ({where})\n")
        supervisor = _supervisor(args, ports, choice, out)
        with foreground():
            return supervisor.loop()
    except RedisServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        if server is not None:
            server.stop()
            out.write(f"embedded redis-server stopped (data kept in {_shown(data_dir)})\n")


def _supervisor(
    args: argparse.Namespace, ports: Ports, choice: RedisChoice, out: Terminal
) -> Supervisor:
    from honcho.printer import Printer

    env = dict(os.environ, STEPSTREAM_REDIS_URL=choice.url, PYTHONUNBUFFERED="1")
    env.setdefault("STEPSTREAM_MCP_CONFIG", str(MCP_CONFIG))
    if ports.flower != FLOWER_PORT:
        env.setdefault("STEPSTREAM_FLOWER_URL", f"http://{HOST}:{ports.flower}")
    auth = bool(env.get("STEPSTREAM_API_TOKEN"))
    supervisor = Supervisor(_kill_wait(os.environ), Printer(out), out)
    commands = service_commands(Path(sys.executable), ports, verbose=args.verbose)
    options: dict[str, dict[str, Any]] = {
        # Cold shutdown: the worker hands its running steps back and exits.
        "worker": {"restart": True, "hurry": signal.SIGQUIT},
        # gunicorn: SIGQUIT stops at once, SIGHUP loads the app anew in new processes.
        "web": {"stop_last": True, "hurry": signal.SIGQUIT, "reload_signal": signal.SIGHUP},
        "flower": {"stop_last": True},
    }
    for name, command in commands.items():
        supervisor.add_process(
            name, "exec " + shlex.join(command), env=env, cwd=str(ROOT), **options[name]
        )
    if args.reload:
        _watch_code(supervisor, args.watch, out)
    supervisor.ready = lambda: probe(ports, auth)
    return supervisor


def _watch_code(supervisor: Supervisor, extra: list[Path], out: Terminal) -> None:
    try:
        import watchfiles  # noqa: F401
    except ImportError:
        out.write("not reloading on code changes: watchfiles is not installed (make install)\n")
        return
    from devtools.reloader import shown, start_watcher, watched

    what = watched(ROOT, extra)
    listed = ", ".join(shown(p, ROOT) + "/" for p in what.trees)
    listed += "".join(f", {shown(f, ROOT)}" for f in what.files)
    out.write(f"reloading on changes to Python files in {listed} (--no-reload: off)\n")
    supervisor.add_helper(start_watcher(what, route, ROOT))


if __name__ == "__main__":
    sys.exit(main())
