"""A web server process as production runs it (gunicorn, gevent workers), for the test
suite and benchmarks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from .redis_server import free_port

ROOT = Path(__file__).resolve().parent.parent
#: A new server must answer /healthz within this many seconds.
START_TIMEOUT_S = 30.0


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
    env: dict[str, str], log_dir: Path, name: str, port: int = 0, app: str = "web:create_app()"
) -> WebProcess:
    """Start gunicorn with `gunicorn.conf.py` serving `app`; returns once it answers."""
    port = port or free_port()
    log_path = log_dir / f"{name}.log"
    command = [sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py"]
    command += ["--bind", f"127.0.0.1:{port}"]
    proc = subprocess.Popen(
        [*command, app],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    web = WebProcess(f"http://127.0.0.1:{port}", proc, log_path)

    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"web {name} exited:\n{log_path.read_text()}")
        try:
            if httpx.get(f"{web.url}/healthz", timeout=1).status_code == 200:
                return web
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            web.kill()
            raise RuntimeError(f"web {name} did not answer /healthz:\n{log_path.read_text()}")
        time.sleep(0.05)  # polling for the server to come up
