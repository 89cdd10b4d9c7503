"""fanout_1000: one run of 1,000 parallel steps between a root and a join, two workers.

A second worker joins the stack's for this figure, with the same environment and
concurrency, and leaves afterwards.
"""

from __future__ import annotations

import time
from typing import Any, cast

import redis

from devtools.celery_worker import start_worker
from tasks import keys

from .api import submit, wait_finished
from .fanout_scenario import PATH, SCENARIO_ID, WIDTH
from .report import figure
from .stack import Stack


def timed_run(stack: Stack, client: redis.Redis) -> float:
    """Seconds from POST /api/runs to run_finished appended."""
    started = time.perf_counter()
    run_id = submit(stack, SCENARIO_ID)
    wait_finished(client, run_id, timeout_s=120)
    elapsed = time.perf_counter() - started
    status = cast("str | None", client.hget(keys.run(run_id), "status"))
    if status != "succeeded":
        raise RuntimeError(f"fan-out run {run_id} ended {status}")
    return elapsed


def fanout_1000(stack: Stack, warmup: int = 1) -> list[dict[str, Any]]:
    if not PATH.exists():
        raise RuntimeError(f"{PATH} is missing: run `python -m bench.fanout_scenario`")
    steps = WIDTH + 2
    client = redis.Redis.from_url(stack.settings.redis_url, decode_responses=True)
    second = start_worker(stack.env, "bench2", stack.log_dir, concurrency=stack.concurrency)
    try:
        for _ in range(warmup):
            timed_run(stack, client)
        elapsed = timed_run(stack, client)
    finally:
        second.stop()
        client.close()
    setup = (
        f"1 run of root -> {WIDTH} parallel echo steps -> join ({steps} steps) after "
        f"{warmup} warm-up run; POST to run_finished; 2 prefork workers "
        f"x{stack.concurrency} (the stack's and a second one), {stack.environment}"
    )
    return [
        figure("fanout_1000", round(elapsed, 2), "s", setup),
        figure("fanout_1000_steps_per_s", round(steps / elapsed, 1), "steps/s", setup),
    ]
