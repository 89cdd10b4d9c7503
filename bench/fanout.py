"""fanout_1000: one run of 1,000 parallel steps between a root and a join, two workers.

A second worker joins the stack's for this figure, with the same environment and
concurrency, and leaves afterwards.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, cast

import redis

from devtools.celery_worker import start_worker
from tasks import keys

from .api import submit
from .fanout_scenario import PATH, SCENARIO_ID, WIDTH, render
from .report import figure
from .stack import Stack

#: How often the run's status is polled: the most that polling adds to the figure.
POLL_S = 0.01
TIMEOUT_S = 120.0
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})


def timed_run(stack: Stack, client: redis.Redis) -> float:
    """Seconds from POST /api/runs to the run's end (status and run_finished are one
    script). The status is polled rather than the stream read: a read per event, 2,000
    of them, would take CPU from the workers on a small machine."""
    started = time.perf_counter()
    run_id = submit(stack, SCENARIO_ID)
    while (status := cast("str | None", client.hget(keys.run(run_id), "status"))) not in TERMINAL:
        if time.perf_counter() - started > TIMEOUT_S:
            raise TimeoutError(f"fan-out run {run_id} did not finish in {TIMEOUT_S:g} s")
        time.sleep(POLL_S)
    elapsed = time.perf_counter() - started
    if status != "succeeded":
        raise RuntimeError(f"fan-out run {run_id} ended {status}")
    return elapsed


def fanout_1000(stack: Stack, runs: int = 3, warmup: int = 1) -> list[dict[str, Any]]:
    """The median of `runs` runs, one at a time, after `warmup` runs (the second
    worker's processes build their runtime on their first steps)."""
    if not PATH.exists() or PATH.read_text() != render():
        raise RuntimeError(f"{PATH} is missing or stale: run `python -m bench.fanout_scenario`")
    steps = WIDTH + 2
    client = redis.Redis.from_url(stack.settings.redis_url, decode_responses=True)
    second = start_worker(stack.env, "bench2", stack.log_dir, concurrency=stack.concurrency)
    try:
        times = [timed_run(stack, client) for _ in range(warmup + runs)][warmup:]
    finally:
        second.stop()
        client.close()
    elapsed = statistics.median(times)
    setup = (
        f"root -> {WIDTH} parallel echo steps -> join ({steps} steps); median of {runs} runs "
        f"one at a time after {warmup} warm-up; POST to run_finished (status polled every "
        f"{POLL_S * 1000:g} ms); 2 prefork workers x{stack.concurrency} (the stack's and a "
        f"second one), {stack.environment}"
    )
    return [
        figure("fanout_1000", round(elapsed, 2), "s", setup),
        figure("fanout_1000_steps_per_s", round(steps / elapsed, 1), "steps/s", setup),
    ]
