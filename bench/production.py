"""Throughput and latency in the production shape, against bare Celery in the same run.

The web runs as deployed: gunicorn with `gunicorn.conf.py` (one gevent worker) in a
process of its own; the load comes from another process (bench/load.py, asyncio, four
keep-alive connections); the worker is a prefork `celery -A worker worker` with the
same concurrency as the bare Celery worker it is compared with (bench/bare_worker.py),
on the same Redis server, another database. This process only reads the all-runs
stream to see runs finish, and sends the bare tasks, as the in-process figures do.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import redis

from devtools.celery_worker import WorkerProcess, start_worker
from devtools.processes import child_pids
from devtools.redis_server import RedisServer
from devtools.web_server import WebProcess, start_web
from tasks import keys

from .api import read_finished, stream_tip, wait_finished
from .bare_worker import BareWorker
from .hops import celery_hop_latency
from .load import Load, post_all
from .report import figure, percentiles
from .stack import SCENARIOS, WORKER, host
from .throughput import noop_rate

ONE_STEP = "bench_one_echo"
THREE_STEPS = "bench_three_echo"
#: Client connections of the single-POST figures (issue 16: four).
CONNECTIONS = 4
#: Runs per `POST /api/runs/batch`.
BATCH_SIZE = 100
TIMEOUT_S = 120.0
#: The pause between reads of the all-runs stream: the most it adds to a measurement.
READ_PAUSE_S = 0.02


@dataclass
class ProductionStack:
    env: dict[str, str]
    web: WebProcess
    worker: WorkerProcess
    redis: redis.Redis
    log_dir: Path
    concurrency: int
    #: The client process, started once: its start-up is not measured.
    clients: ProcessPoolExecutor

    @property
    def url(self) -> str:
        return self.web.url

    def redis_url(self, db: int) -> str:
        base, _, _ = self.env["STEPSTREAM_REDIS_URL"].rpartition("/")
        return f"{base}/{db}"

    @property
    def setup(self) -> str:
        return (
            f"web: gunicorn (gunicorn.conf.py, 1 gevent worker) in its own process; clients: "
            f"asyncio in another process; 1 prefork worker x{self.concurrency}; Redis on "
            f"loopback; {host()}"
        )


def web_pid(web: WebProcess) -> int:
    """The gunicorn worker serving the requests (the master only watches it)."""
    return child_pids(web.proc.pid)[0]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux: /proc/<pid>/stat, after the name)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    # utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def production_stack(concurrency: int = 2) -> Iterator[ProductionStack]:
    with tempfile.TemporaryDirectory() as tmp, RedisServer(port=0, data_dir=tmp) as server:
        env = {
            "STEPSTREAM_REDIS_URL": server.url,
            "STEPSTREAM_SCENARIOS_DIR": str(SCENARIOS),
            "STEPSTREAM_HEARTBEAT_S": "1",
        }
        log_dir = Path(tmp)
        worker = start_worker(env, WORKER, log_dir, concurrency=concurrency)
        web = start_web(env, log_dir, "web")
        client = redis.Redis.from_url(server.url, decode_responses=True)
        clients = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        try:
            yield ProductionStack(env, web, worker, client, log_dir, concurrency, clients)
        finally:
            clients.shutdown(cancel_futures=True)
            client.close()
            web.kill()
            worker.stop()


def one_run_body(scenario_id: str = ONE_STEP) -> dict[str, Any]:
    return {"scenario_id": scenario_id, "input": {}}


def single_bodies(n: int) -> list[bytes]:
    return [json.dumps(one_run_body()).encode()] * n


def batch_bodies(n: int) -> list[bytes]:
    sizes = [min(BATCH_SIZE, n - i) for i in range(0, n, BATCH_SIZE)]
    return [json.dumps({"runs": [one_run_body()] * size}).encode() for size in sizes]


@dataclass(frozen=True)
class Rate:
    runs_per_s: float
    #: CPU time of the web process per request (single POSTs) or per run (batches).
    web_cpu_ms: float


def run_rate(stack: ProductionStack, web: WebProcess, path: str, bodies: list[bytes]) -> Rate:
    """Runs per second: the client process posts every body, this one waits for as many
    run_finished on the all-runs stream as runs were answered. From the client's first
    request to the last run_finished read."""
    reader = stack.redis
    stream = keys.all_events()
    cursor = stream_tip(reader, stream)
    pid = web_pid(web)
    cpu_before = cpu_seconds(pid)
    posted: Future[Load] = stack.clients.submit(post_all, web.url, path, bodies, CONNECTIONS)
    # When each run_finished was read; only the runs submitted here count, whatever
    # else finishes meanwhile.
    finished: dict[str, float] = {}
    submitted: set[str] | None = None
    deadline = time.monotonic() + TIMEOUT_S
    while submitted is None or not submitted <= finished.keys():
        cursor, done = read_finished(reader, stream, cursor, block_ms=200)
        finished |= dict.fromkeys(done, time.monotonic())
        if submitted is None and posted.done():
            submitted = set(posted.result().run_ids)  # raises what the client raised
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(finished)} runs finished in {TIMEOUT_S:g} s")
        time.sleep(READ_PAUSE_S)
    load = posted.result()
    cpu = cpu_seconds(pid) - cpu_before
    ended = max(finished[run_id] for run_id in submitted)
    return Rate(len(submitted) / (ended - load.started), cpu * 1000 / len(bodies))


def batch_route(stack: ProductionStack) -> str | None:
    """None when `POST /api/runs/batch` takes a batch, else why it cannot be measured.
    The run it submits is waited for, so that it is not counted in a measurement."""
    response = httpx.post(
        f"{stack.url}/api/runs/batch", json={"runs": [one_run_body()]}, timeout=30
    )
    if response.status_code != 202:
        return f"POST /api/runs/batch answered {response.status_code}"
    for run in response.json()["runs"]:
        wait_finished(stack.redis, run["run_id"])
    return None


def throughput(
    stack: ProductionStack, bare: BareWorker, n: int = 500, rounds: int = 3
) -> list[dict[str, Any]]:
    """run_overhead_single and run_overhead (batch), each against bare no-op tasks.

    The sides alternate, `rounds` times each after a warm-up, so that a slow spell of
    the machine does not land on one side only; each figure is the median.
    """
    batch_missing = batch_route(stack)
    run_rate(stack, stack.web, "/api/runs", single_bodies(20))
    noop_rate(bare, 20)
    noops: list[float] = []
    singles: list[Rate] = []
    batches: list[Rate] = []
    for _ in range(rounds):
        noops.append(noop_rate(bare, n))
        singles.append(run_rate(stack, stack.web, "/api/runs", single_bodies(n)))
        if batch_missing is None:
            batches.append(run_rate(stack, stack.web, "/api/runs/batch", batch_bodies(n)))
    noop_s = statistics.median(noops)
    single_s = statistics.median(r.runs_per_s for r in singles)
    common = (
        f"N={n} runs submitted at once, timed from the first request to the last "
        f"run_finished on the all-runs stream, median of {rounds} rounds alternating with "
        f"the bare side; {stack.setup}; bare side: 1 prefork worker x{bare.concurrency} "
        "on stepstream's Celery settings, same Redis server, another database"
    )
    singles_how = f"one-step echo runs, one POST /api/runs each, {CONNECTIONS} connections"
    batches_how = f"one-step echo runs, POST /api/runs/batch of {BATCH_SIZE}"
    noops_how = "no-op tasks that INCR a Redis counter, sent with send_task from 1 thread"
    figures = [
        figure(
            "run_overhead_single",
            round(single_s / noop_s, 3),
            "ratio",
            f"run_throughput_single / celery_noop_throughput: {singles_how} vs {noops_how}; "
            f"{common}",
        ),
        figure("run_throughput_single", round(single_s, 1), "runs/s", f"{singles_how}; {common}"),
        figure("celery_noop_throughput", round(noop_s, 1), "tasks/s", f"{noops_how}; {common}"),
    ]
    if batch_missing is None:
        batch_s = statistics.median(r.runs_per_s for r in batches)
        figures += [
            figure(
                "run_overhead",
                round(batch_s / noop_s, 3),
                "ratio",
                f"run_throughput / celery_noop_throughput: {batches_how} vs {noops_how}; {common}",
            ),
            figure("run_throughput", round(batch_s, 1), "runs/s", f"{batches_how}; {common}"),
        ]
    else:
        figures.append(figure("run_overhead", None, "ratio", f"skipped: {batch_missing}"))
    return figures


def post_cpu(
    stack: ProductionStack, baseline: Path | None, n: int = 1000, rounds: int = 4
) -> list[dict[str, Any]]:
    """CPU time of the web process per `POST /api/runs` (served, and the run sent),
    while the stack's workers run what it sends; with `baseline` (a checkout of another
    commit), the same for a web started from that checkout.

    Each web is started for this figure alone, so that both have served the same
    requests before; their turns alternate (ABBA) over the rounds."""
    webs = {"post_cpu_ms": start_web(stack.env, stack.log_dir, "web-post")}
    if baseline is not None:
        # gunicorn puts its --chdir first on sys.path unless it is there already: no
        # PYTHONPATH, so that nothing is imported from this checkout instead.
        webs["post_cpu_ms_baseline"] = start_web(
            {**stack.env, "PYTHONPATH": ""},
            stack.log_dir,
            "web-baseline",
            gunicorn_args=("--chdir", str(baseline)),
        )
    try:
        samples: dict[str, list[float]] = {name: [] for name in webs}
        for web in webs.values():  # warm-up
            run_rate(stack, web, "/api/runs", single_bodies(100))
        for i in range(rounds):
            turns = list(webs.items())
            for name, web in turns if i % 2 == 0 else reversed(turns):
                samples[name].append(run_rate(stack, web, "/api/runs", single_bodies(n)).web_cpu_ms)
    finally:
        for web in webs.values():
            web.kill()
    how = (
        f"CPU time (user + system) of the gunicorn worker process over N={n} one-step "
        f"POST /api/runs from {CONNECTIONS} connections, divided by N, median of {rounds} "
        f"rounds; {stack.setup}"
    )
    figures = [
        figure("post_cpu_ms", round(statistics.median(samples["post_cpu_ms"]), 3), "ms", how)
    ]
    if baseline is not None:
        figures.append(
            figure(
                "post_cpu_ms_baseline",
                round(statistics.median(samples["post_cpu_ms_baseline"]), 3),
                "ms",
                f"the same for a web started from {baseline} ({commit_of(baseline)}), "
                f"its rounds alternating with post_cpu_ms's in the same run: "
                f"{[round(x, 3) for x in samples['post_cpu_ms_baseline']]} against "
                f"{[round(x, 3) for x in samples['post_cpu_ms']]}",
            )
        )
    return figures


def commit_of(tree: Path) -> str:
    answer = subprocess.run(
        ["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    return answer.stdout.strip() or "not a git checkout"


def latency(
    stack: ProductionStack, bare: BareWorker, runs: int = 60, warmup: int = 5
) -> list[dict[str, Any]]:
    """run_latency_3 through the production web, beside celery_hop_latency and their ratio."""
    samples = []
    with httpx.Client(timeout=30) as http:
        for i in range(warmup + runs):
            started = time.perf_counter()
            response = http.post(f"{stack.url}/api/runs", json=one_run_body(THREE_STEPS))
            response.raise_for_status()
            wait_finished(stack.redis, response.json()["run_id"])
            if i >= warmup:
                samples.append((time.perf_counter() - started) * 1000)
    runs_figure = figure(
        "run_latency_3",
        percentiles(samples),
        "ms",
        f"POST /api/runs to run_finished appended, three sequential echo steps, {runs} runs "
        f"one at a time; {stack.setup}",
    )
    hops = celery_hop_latency(bare)
    ratio = runs_figure["value"]["p50"] / hops["value"]["p50"]
    return [
        runs_figure,
        hops,
        figure(
            "run_latency_3_hops",
            round(ratio, 2),
            "ratio",
            "run_latency_3 p50 / celery_hop_latency p50, measured in the same run (three "
            "sequential steps cannot take fewer than three hops)",
        ),
    ]
