"""Throughput with the web app in the bench process: runs/s of a one-step scenario
against bare Celery no-op tasks/s. The production shape is bench/production.py; these
figures keep their `_in_process` names so that the two are never confused.

Both sides submit N items as fast as they can and stop the clock when the last one is
done, on the same Redis server and the same worker shape (prefork, same concurrency);
only the Redis database differs. stepstream's runs go through the HTTP API; the bare
tasks are sent straight to the broker, as the API itself sends a run's first steps.
"""

from __future__ import annotations

import statistics
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import httpx
import redis

from tasks import keys

from .api import read_finished, stream_tip, submit
from .bare_app import NOOP
from .bare_worker import BareWorker, wait_done
from .report import figure
from .stack import Stack

SCENARIO = "bench_one_echo"
TIMEOUT_S = 120.0
#: The pause between reads of the all-runs stream: the most it adds to a measurement.
READ_PAUSE_S = 0.02


def noop_rate(bare: BareWorker, n: int) -> float:
    """Tasks per second: send n no-op tasks, wait until the n-th has counted itself."""
    counter = f"bench:noop:{uuid.uuid4()}"
    started = time.perf_counter()
    for _ in range(n):
        bare.app.send_task(NOOP, args=[counter, n])
    wait_done(bare.redis, counter, TIMEOUT_S)
    return n / (time.perf_counter() - started)


def run_rate(stack: Stack, n: int, clients: list[httpx.Client]) -> float:
    """Runs per second: POST n runs from len(clients) threads, wait for n run_finished.

    Completions are read from the all-runs stream, a batch of events per XREAD.
    """
    reader = redis.Redis.from_url(stack.settings.redis_url, decode_responses=True)
    stream = keys.all_events()
    cursor = stream_tip(reader, stream)
    shares = [n // len(clients) + (i < n % len(clients)) for i in range(len(clients))]

    def post(http: httpx.Client, count: int) -> list[str]:
        return [submit(stack, SCENARIO, http) for _ in range(count)]

    finished: set[str] = set()
    with ThreadPoolExecutor(len(clients)) as pool:
        started = time.perf_counter()
        posters = [pool.submit(post, http, k) for http, k in zip(clients, shares, strict=True)]
        deadline = started + TIMEOUT_S
        while len(finished) < n:
            cursor, ended = read_finished(reader, stream, cursor, block_ms=1000)
            finished.update(ended)
            _raise_failed(posters)
            # Let events pile up between reads: the reader shares the process (and its
            # GIL) with the web server, and a read per event would slow the server down.
            time.sleep(READ_PAUSE_S)
            if time.perf_counter() > deadline:
                raise TimeoutError(f"{len(finished)} of {n} runs finished in {TIMEOUT_S:g} s")
        elapsed = time.perf_counter() - started
    reader.close()
    submitted = {run_id for poster in posters for run_id in poster.result()}
    if submitted != finished:
        raise RuntimeError("the runs that finished are not the runs submitted")
    return n / elapsed


def _raise_failed(posters: list[Future[list[str]]]) -> None:
    for poster in posters:
        if poster.done() and poster.exception() is not None:
            poster.result()


def throughput(
    stack: Stack, bare: BareWorker, n: int = 500, rounds: int = 3, threads: int = 2
) -> list[dict[str, Any]]:
    """run_throughput, celery_noop_throughput and their ratio, run_overhead.

    The two sides alternate, `rounds` times each after a warm-up, so that a slow spell
    of the machine does not land on one side only; each figure is the median.
    """
    clients = [httpx.Client(timeout=30) for _ in range(threads)]
    try:
        run_rate(stack, 20, clients)
        noop_rate(bare, 20)
        runs, noops = [], []
        for _ in range(rounds):
            noops.append(noop_rate(bare, n))
            runs.append(run_rate(stack, n, clients))
    finally:
        for http in clients:
            http.close()
    run_s, noop_s = statistics.median(runs), statistics.median(noops)
    common = (
        f"N={n} submitted at once, timed to the last one done, median of {rounds} "
        f"alternating rounds; each side 1 prefork worker x{bare.concurrency} on "
        "stepstream's Celery settings, same Redis server, separate databases; "
        f"{stack.environment}"
    )
    runs_how = (
        f"one-step echo runs POSTed to /api/runs from {threads} client threads, done = "
        "run_finished on the all-runs stream"
    )
    noops_how = "no-op tasks that INCR a Redis counter, sent with send_task from 1 thread"
    return [
        figure(
            "run_overhead_in_process",
            round(run_s / noop_s, 3),
            "ratio",
            "run_throughput_in_process / celery_noop_throughput_in_process: "
            f"{runs_how} vs {noops_how}; {common}",
        ),
        figure("run_throughput_in_process", round(run_s, 1), "runs/s", f"{runs_how}; {common}"),
        figure(
            "celery_noop_throughput_in_process",
            round(noop_s, 1),
            "tasks/s",
            f"{noops_how}; {common}",
        ),
    ]
