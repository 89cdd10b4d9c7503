"""A web server process as production runs it (gunicorn, gevent workers), for the test
suite and benchmarks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx

from .processes import spawn, wait_ready
from .redis_server import free_port


@dataclass
class WebProcess:
    """A web server in a process of its own (gunicorn, as `make up` runs it)."""

    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def kill(self) -> None:
        """SIGKILL the master and its workers: a crash, no goodbye to anyone."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)


def start_web(
    env: dict[str, str],
    log_dir: Path,
    name: str,
    port: int = 0,
    app: str = "web:create_app()",
    gunicorn_args: tuple[str, ...] = (),
) -> WebProcess:
    """Start gunicorn with `gunicorn.conf.py` serving `app`; returns once it answers.

    `gunicorn_args` go on its command line as given: `("--access-logfile", "-")`
    writes gunicorn's access log to the process's log file, as containers usually do.
    """
    port = port or free_port()
    log_path = log_dir / f"{name}.log"
    command = [sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py"]
    command += ["--bind", f"127.0.0.1:{port}", *gunicorn_args]
    proc = spawn([*command, app], env, log_path)
    web = WebProcess(f"http://127.0.0.1:{port}", proc, log_path)

    def healthy() -> bool:
        try:
            return httpx.get(f"{web.url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_ready(proc, healthy, what=f"web {name}'s /healthz", log_path=log_path, give_up=web.kill)
    return web
