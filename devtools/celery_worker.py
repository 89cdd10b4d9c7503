"""A real `celery -A worker worker` child process, for the test suite and benchmarks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import redis

from tasks import keys

from .processes import spawn, wait_ready


@dataclass
class WorkerProcess:
    """A worker node started by `start_worker`; `name` is the part before the `@`."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (Celery's warm shutdown), then SIGKILL for the whole group."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)


def start_worker(
    env: dict[str, str], name: str, log_dir: Path, concurrency: int = 2, pool: str = "prefork"
) -> WorkerProcess:
    """Start a worker (prefork unless `pool` says otherwise) and wait for its heartbeat
    in `env`'s Redis."""
    log_path = log_dir / f"{name}.log"
    proc = spawn(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "worker",
            "worker",
            "-P",
            pool,
            "-c",
            str(concurrency),
            "-n",
            f"{name}@%h",
            "--without-mingle",
            "--without-gossip",
            "--loglevel=INFO",
        ],
        env,
        log_path,
    )
    worker = WorkerProcess(name, proc, log_path)
    client = redis.Redis.from_url(env["STEPSTREAM_REDIS_URL"], decode_responses=True)

    def beating() -> bool:
        return any(str(k).startswith(f"{name}@") for k in client.hkeys(keys.workers()))

    try:
        wait_ready(
            proc, beating, what=f"worker {name}'s heartbeat", log_path=log_path,
            give_up=worker.stop,
        )  # fmt: skip
    finally:
        client.close()
    return worker
