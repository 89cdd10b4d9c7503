"""A bare Celery app on stepstream's own Celery settings: the baseline for its overhead.

`celery -A bench.bare_app worker` runs it. Its configuration is
`worker.celery_app.celery_config` minus `include` (acks_late, prefetch 1, task events
on, results ignored ...), so the only difference from stepstream is what the tasks do.
Its settings come from the environment, like stepstream's; the benchmarks point it at
another Redis database so the two never share a queue.
"""

from __future__ import annotations

import time
from functools import cache
from typing import Any

import redis

from tasks.config import Settings
from worker.celery_app import celery_config, create_celery_app

NOOP = "bench.noop"
HOP = "bench.hop"


def bare_config(settings: Settings) -> dict[str, Any]:
    config = celery_config(settings)
    del config["include"]
    return config


app = create_celery_app(name="bench_bare", config=bare_config)


@cache
def _redis() -> redis.Redis:
    # Built on first use, in the prefork child, after the fork.
    return redis.Redis.from_url(Settings.from_env().redis_url)


def done_key(counter: str) -> str:
    return f"{counter}:done"


def _noop(counter: str, target: int) -> None:
    """Nothing but a count; the task that reaches `target` says so on `done_key`, so the
    benchmark blocks on one list instead of polling the counter."""
    if _redis().incr(counter) == target:
        _redis().rpush(done_key(counter), 1)


def _hop(log_key: str, remaining: int) -> None:
    """Note when this hop started, then enqueue the next one: one hop per message."""
    started = time.time()
    if remaining > 0:
        hop.apply_async(args=(log_key, remaining - 1))
    _redis().rpush(log_key, repr(started))
    if remaining == 0:
        _redis().rpush(done_key(log_key), 1)


# Called rather than used as decorators: Celery's decorators carry no types.
noop = app.task(name=NOOP, ignore_result=True)(_noop)
hop = app.task(name=HOP, ignore_result=True)(_hop)
