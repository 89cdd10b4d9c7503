"""A `celery -A bench.bare_app worker` child process, flagged like stepstream's own."""

from __future__ import annotations

import contextlib
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import redis
from celery import Celery

from devtools.celery_worker import WorkerProcess
from devtools.processes import spawn
from tasks.config import Settings
from worker.celery_app import create_celery_app

from .bare_app import NOOP, bare_config, done_key

START_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class BareWorker:
    """A running bare worker, the app that sends to it and a client of its Redis."""

    process: WorkerProcess
    app: Celery
    redis: redis.Redis
    concurrency: int


def wait_done(client: redis.Redis, key: str, timeout_s: float) -> None:
    """Block until the tasks counting on `key` say they are all done (see `done_key`)."""
    if client.blpop([done_key(key)], timeout=timeout_s) is None:
        raise TimeoutError(f"the tasks on {key} were not done within {timeout_s:g} s")


@contextlib.contextmanager
def bare_worker(
    env: dict[str, str], redis_url: str, log_dir: Path, concurrency: int = 2
) -> Iterator[BareWorker]:
    """Start the bare worker on `redis_url` (broker and counters) and wait until it works.

    `env` is stepstream's worker environment, so both workers run with the same
    heartbeat and logging; only the Redis database differs.
    """
    bare_env = {**env, "STEPSTREAM_REDIS_URL": redis_url, "STEPSTREAM_BROKER_URL": redis_url}
    log_path = log_dir / "bare.log"
    argv = [
        sys.executable, "-m", "celery", "-A", "bench.bare_app", "worker",
        "-P", "prefork", "-c", str(concurrency), "-n", "bare@%h",
        "--without-mingle", "--without-gossip", "--loglevel=INFO",
    ]  # fmt: skip
    process = WorkerProcess("bare", spawn(argv, bare_env, log_path), log_path)
    app = create_celery_app(Settings.from_env(bare_env), name="bench_bare", config=bare_config)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        ready = f"bench:ready:{uuid.uuid4()}"
        app.send_task(NOOP, args=[ready, 1])
        try:
            wait_done(client, ready, START_TIMEOUT_S)
        except TimeoutError:
            raise RuntimeError(f"the bare worker ran nothing:\n{process.log()}") from None
        yield BareWorker(process, app, client, concurrency)
    finally:
        process.stop()
        client.close()
        app.close()
