"""Streaming figures: a thousand live subscribers on one web process, replay, publish.

Everything here runs the production shape: gunicorn with gevent workers (one process)
serving the web app, a gevent Celery worker with enough slots for a hundred live runs,
and asyncio clients in this process. Latency is measured from an event's `ts` (Redis'
clock when it was appended) to its arrival at a client, on the same host.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import httpx
import redis

from devtools.celery_worker import start_worker
from devtools.processes import child_pids
from devtools.redis_server import RedisServer
from devtools.web_server import WebProcess, start_web
from tasks import keys
from web import WEB_CLIENT_NAME

from .api import wait_finished
from .crowd import (
    Crowd,
    Job,
    LiveRuns,
    Outcome,
    raise_file_limit,
    raw_sse,
    samples_between,
    sse_events,
    timeline,
    ws_events,
)
from .report import figure, percentiles
from .stack import SCENARIOS, host

TOOLS = Path(__file__).resolve().parent / "tools"
RUNS = 100
PER_RUN = 10
#: Events per second each live run appends, and for how long.
TICKS, TICK_SECONDS = 30, 15.0


@dataclass
class StreamingStack:
    env: dict[str, str]
    web: WebProcess
    redis: redis.Redis
    log_dir: Path

    def submit(self, scenario_id: str, run_input: dict[str, Any] | None = None) -> str:
        response = httpx.post(
            f"{self.web.url}/api/runs",
            json={"scenario_id": scenario_id, "input": run_input or {}},
            timeout=30,
        )
        response.raise_for_status()
        return str(response.json()["run_id"])

    def web_worker_pid(self) -> int:
        return child_pids(self.web.proc.pid)[0]


@contextlib.contextmanager
def streaming_stack() -> Iterator[StreamingStack]:
    with tempfile.TemporaryDirectory() as tmp, RedisServer(port=0, data_dir=tmp) as server:
        env = {
            "STEPSTREAM_REDIS_URL": server.url,
            "STEPSTREAM_SCENARIOS_DIR": str(SCENARIOS),
            "STEPSTREAM_HEARTBEAT_S": "1",
            "PYTHONPATH": os.pathsep.join(
                [str(TOOLS), *filter(None, [os.environ.get("PYTHONPATH")])]
            ),
        }
        log_dir = Path(tmp)
        worker = start_worker(env, "live", log_dir, concurrency=RUNS + 10, pool="gevent")
        web = start_web(env, log_dir, "web")
        client = redis.Redis.from_url(server.url, decode_responses=True)
        try:
            yield StreamingStack(env, web, client, log_dir)
        finally:
            client.close()
            web.kill()
            worker.stop()


SETUP = (
    "one web process (gunicorn, gevent worker), one gevent Celery worker, Redis on "
    "loopback, asyncio clients in the bench process"
)


#: Groups of figures, in the order they run; `run(only=...)` picks some.
GROUPS = ("live", "crowd", "storm", "replay", "xadd")


def streaming_figures(
    stack: StreamingStack, only: set[str] | None = None, limits: str = ""
) -> Iterator[dict[str, Any]]:
    wanted = set(GROUPS) if only is None else only
    peer_p99: float | None = None
    if "live" in wanted:
        ws = live_latency(stack, "ws")
        yield figure("event_latency_1000", ws["latency"], "ms", ws["setup"])
        yield figure("web_redis_connections_1000", ws["connections"], "connections", ws["setup"])
        yield figure("web_rss_mb_1000", ws["rss_mb"], "MB", ws["setup"])
        sse = live_latency(stack, "sse")
        yield figure("sse_latency_1000", sse["latency"], "ms", sse["setup"])
        peer = flask_sse_latency(stack)
        peer_p99 = peer["latency"]["p99"]
        yield figure("flask_sse_latency_1000", peer["latency"], "ms", peer["setup"])
        yield figure(
            "flask_sse_redis_connections_1000", peer["connections"], "connections", peer["setup"]
        )
    if "crowd" in wanted:
        yield from crowd_figures(stack, limits, peer_p99)
    if "storm" in wanted:
        yield storm_figure(stack)
    if "replay" in wanted:
        yield from publish_and_replay(stack)
    if "xadd" in wanted:
        yield xadd_limit(stack)


# -- a thousand live subscribers -----------------------------------------------------


def live_latency(stack: StreamingStack, transport: str) -> dict[str, Any]:
    """100 runs ticking twice a second, 10 subscribers each, over WS or SSE."""
    run_ids = [
        stack.submit("bench_live", {"ticks": TICKS, "seconds": TICK_SECONDS}) for _ in range(RUNS)
    ]
    samples: list[float] = []
    watch = ResourceWatch(stack)

    async def subscriber(run_id: str) -> None:
        path = f"/api/runs/{run_id}/" + ("ws" if transport == "ws" else "events")
        follow = ws_events if transport == "ws" else sse_events
        opened = None
        async for event, received in follow(stack.web.url, path):
            if event is None:
                opened = received
                continue
            appended = datetime.fromisoformat(event["ts"]).timestamp()
            # Only events appended once this client was connected are live for it;
            # what came before it connected is replay, not delivery latency.
            live = opened is not None and appended >= opened
            if live and event["type"] == "step_progress" and event["step"] == "tick":
                samples.append((received - appended) * 1000)
            if event["type"] == "run_finished":
                return

    async def everyone() -> None:
        await asyncio.gather(*(subscriber(r) for r in run_ids for _ in range(PER_RUN)))

    with watch:
        asyncio.run(everyone())
    for run_id in run_ids:
        wait_finished(stack.redis, run_id)
    setup = (
        f"{RUNS * PER_RUN} {transport.upper()} subscribers over {RUNS} live runs, each run "
        f"appending {TICKS / TICK_SECONDS:g} events/s; {len(samples)} deliveries; {SETUP}, {host()}"
    )
    return {
        "latency": percentiles(samples),
        "connections": watch.max_connections,
        "rss_mb": round(watch.max_rss_mb, 1),
        "setup": setup,
    }


class ResourceWatch:
    """Samples the web process's Redis connections and resident memory while in use."""

    def __init__(
        self,
        stack: StreamingStack,
        name: str = WEB_CLIENT_NAME,
        web: WebProcess | None = None,
        db: int | None = None,
    ) -> None:
        self.stack = stack
        self.name = name
        self.web = web or stack.web
        self.db = db
        self.max_connections = 0
        self.max_rss_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ResourceWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        pid = child_pids(self.web.proc.pid)[0]
        while not self._stop.wait(0.5):
            clients = self.stack.redis.client_list()
            count = sum(
                1
                for c in clients
                if c.get("name") == self.name and (self.db is None or c.get("db") == str(self.db))
            )
            self.max_connections = max(self.max_connections, count)
            self.max_rss_mb = max(self.max_rss_mb, rss_mb(pid))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


# -- the peer: flask-sse -----------------------------------------------------------------


def flask_sse_latency(stack: StreamingStack) -> dict[str, Any]:
    """The same load through flask-sse: 100 channels, 10 subscribers each."""
    web = start_web(stack.env, stack.log_dir, "flask-sse", app="bench.flask_sse_app:app")
    samples: list[float] = []
    connected = threading.Event()
    before = len(stack.redis.client_list())
    peak = 0
    try:

        async def subscriber(channel: int) -> None:
            async for messages, received in raw_sse(web.url, f"/stream?channel=c{channel}"):
                for sse in messages or ():
                    message = json.loads(sse.data)
                    if message.get("end"):
                        return
                    samples.append((received - message["ts"]) * 1000)

        def publisher() -> None:
            connected.wait()
            client = redis.Redis.from_url(stack.env["STEPSTREAM_REDIS_URL"])
            interval = TICK_SECONDS / TICKS
            for _ in range(TICKS):
                started = time.monotonic()
                for channel in range(RUNS):
                    payload = json.dumps({"data": {"ts": time.time()}, "type": "tick"})
                    client.publish(f"c{channel}", payload)
                time.sleep(max(0.0, interval - (time.monotonic() - started)))
            for channel in range(RUNS):
                client.publish(f"c{channel}", json.dumps({"data": {"end": True}}))
            client.close()

        async def main() -> None:
            tasks = [
                asyncio.ensure_future(subscriber(c)) for c in range(RUNS) for _ in range(PER_RUN)
            ]

            # flask-sse has no replay: publishing starts once every client is subscribed.
            def subscribed() -> int:
                return sum(
                    int(v) for k, v in stack.redis.pubsub_numsub(*[f"c{c}" for c in range(RUNS)])
                )

            while await asyncio.to_thread(subscribed) < RUNS * PER_RUN:
                await asyncio.sleep(0.2)
            nonlocal peak
            peak = len(stack.redis.client_list()) - before
            connected.set()
            await asyncio.gather(*tasks)

        thread = threading.Thread(target=publisher, daemon=True)
        thread.start()
        asyncio.run(main())
        thread.join()
    finally:
        web.kill()
    return {
        "latency": percentiles(samples),
        "connections": peak,
        "setup": (
            f"flask-sse 1.0 (Redis pub/sub), {RUNS * PER_RUN} SSE subscribers over {RUNS} "
            f"channels, each published {TICKS / TICK_SECONDS:g} times/s; {len(samples)} "
            f"deliveries; same gunicorn configuration; {SETUP}, {host()}"
        ),
    }


# -- publishing and replaying ------------------------------------------------------------


def publish_and_replay(stack: StreamingStack) -> list[dict[str, Any]]:
    run_id = stack.submit("bench_chatter")
    wait_finished(stack.redis, run_id, timeout_s=300)
    entries = cast("list[tuple[str, dict[str, str]]]", stack.redis.xrange(keys.run_events(run_id)))
    events = [json.loads(f["data"]) for _, f in entries]
    stamp = {e["type"]: datetime.fromisoformat(e["ts"]).timestamp() for e in events}
    started, finished = stamp["step_started"], stamp["step_finished"]
    progress = sum(1 for e in events if e["type"] == "step_progress")
    publish = figure(
        "publish_rate",
        round(progress / (finished - started)),
        "events/s",
        f"one step calling ctx.progress {progress} times in a loop, from its step_started "
        f"to its step_finished (all events appended, in order); gevent Celery worker, {host()}",
    )

    async def replay(transport: str) -> tuple[int, float]:
        count = 0
        started = time.perf_counter()
        follow = ws_events if transport == "ws" else sse_events
        path = f"/api/runs/{run_id}/" + ("ws" if transport == "ws" else "events")
        async for event, _ in follow(stack.web.url, path):
            if event is None:
                continue
            count += 1
            if event["type"] == "run_finished":
                break
        return count, time.perf_counter() - started

    count, sse_s = asyncio.run(replay("sse"))
    _, ws_s = asyncio.run(replay("ws"))
    replayed = figure(
        "replay_rate",
        round(count / sse_s),
        "events/s",
        f"a new SSE subscriber of a finished run with {count} events, from connect to "
        f"run_finished, the client reading every event (client/sse.py's decoder, the JSON "
        f"by pydantic-core, each checked by client.follow.Cursor: no repeat, no gap, in "
        f"order); over WebSocket, measured next: {round(count / ws_s)}/s, where the "
        f"Python client's frame parsing is the limit; {SETUP}, {host()}",
    )
    return [publish, replayed]


def xadd_limit(stack: StreamingStack, seconds: float = 2.0) -> dict[str, Any]:
    client = redis.Redis.from_url(stack.env["STEPSTREAM_REDIS_URL"])
    body = json.dumps({"type": "step_progress", "progress": 0.5, "message": "x" * 16})
    try:
        count, deadline = 0, time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            client.xadd("bench:xadd:one", {"data": body})
            count += 1
        sequential = count / seconds
        count, deadline = 0, time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            pipe = client.pipeline(transaction=False)
            for _ in range(100):
                pipe.xadd("bench:xadd:many", {"data": body})
            pipe.execute()
            count += 100
        pipelined = count / seconds
    finally:
        client.close()
    return figure(
        "xadd_limit",
        round(pipelined),
        "events/s",
        f"raw XADD of a 100-byte event by one redis-py client, pipelined 100 at a time "
        f"(one at a time: {round(sequential)}/s); same Redis, {host()}",
    )


def run(emit: Callable[..., None], only: set[str] | None = None) -> None:
    """Every streaming figure, or the groups in `only` (see GROUPS); `make bench` runs
    them all. `STEPSTREAM_BENCH_STREAMING=crowd,storm` picks groups the same way."""
    if only is None and os.environ.get("STEPSTREAM_BENCH_STREAMING"):
        only = set(os.environ["STEPSTREAM_BENCH_STREAMING"].split(","))
    # Before any server or client process starts: they inherit it. The web holds one
    # file per subscriber; the client processes share theirs.
    limits = raise_file_limit(CROWD_RUNS * CROWD_PER_RUN + 4096)
    with streaming_stack() as stack:
        for result in streaming_figures(stack, only, limits):
            emit(result)


# -- ten thousand live subscribers -------------------------------------------------------

CROWD_RUNS, CROWD_PER_RUN = 1000, 10
#: Events per second each of the thousand runs appends, and for how long: 2,000
#: deliveries a second in all, as many as the thousand-subscriber figures make, so that
#: this one measures what ten times the subscribers cost.
CROWD_RATE, CROWD_SECONDS = 0.2, 30.0
#: Client processes sharing the ten thousand connections.
CROWD_PROCESSES = 4


def side_env(stack: StreamingStack, db: int) -> tuple[str, dict[str, str]]:
    """A Redis database of its own (no worker sweeps it), and the env of a web on it."""
    url = stack.env["STEPSTREAM_REDIS_URL"].rsplit("/", 1)[0] + f"/{db}"
    return url, {**stack.env, "STEPSTREAM_REDIS_URL": url}


def everyone_once(outcomes: list[Outcome], lengths: dict[str, int]) -> str:
    """Whether every subscriber got every event of its run once, in order (its Cursor
    raises on a gap and counts repeats), or what went wrong."""
    wrong = [
        o
        for o in outcomes
        if o.error or not o.finished or o.repeats or o.delivered != lengths[o.run_id] - o.skip
    ]
    if not wrong:
        return f"all {len(outcomes)} got every event of their run once, in order"
    first = wrong[0]
    return (
        f"{len(wrong)} of {len(outcomes)} did not get every event once (e.g. delivered "
        f"{first.delivered} of {lengths[first.run_id] - first.skip}, repeats {first.repeats}, "
        f"finished {first.finished}, error {first.error!r})"
    )


def crowd_figures(
    stack: StreamingStack, limits: str, peer_p99: float | None
) -> list[dict[str, Any]]:
    """10,000 WebSocket subscribers over 1,000 live runs, one web process."""
    url, env = side_env(stack, 1)
    web = start_web(env, stack.log_dir, "web-10000")
    runs = LiveRuns(url, CROWD_RUNS)
    jobs = [Job(r, "ws") for _ in range(CROWD_PER_RUN) for r in runs.run_ids]
    crowd = Crowd(web.url, jobs, CROWD_PROCESSES)
    try:
        with ResourceWatch(stack, web=web, db=1) as watch:
            crowd.go()
            first, last = crowd.connected()
            stop = threading.Event()
            runs.publish(CROWD_RATE, CROWD_SECONDS, stop)
            runs.finish()
            outcomes = crowd.outcomes()
        lengths = runs.lengths()
    finally:
        crowd.kill()
        runs.close()
        web.kill()
    samples = [latency for o in outcomes for _, latency in o.samples]
    if step := timeline_step():
        print(timeline(outcomes, step), file=sys.stderr)
    latency = percentiles(samples) | {"max": round(max(samples, default=0.0), 1)}
    versus = f"; flask-sse p99 at 1,000 in this run: {peer_p99} ms" if peer_p99 else ""
    setup = (
        f"{len(jobs)} WebSocket subscribers over {CROWD_RUNS} live runs, each run appending "
        f"{CROWD_RATE:g} event/s for {CROWD_SECONDS:g} s, spread evenly (as many deliveries a "
        f"second as the 1,000-subscriber figures); {len(samples)} "
        f"deliveries; {everyone_once(outcomes, lengths)}; all connected in "
        f"{last - first:.1f} s by {CROWD_PROCESSES} asyncio client processes{versus}; one web "
        f"process (gunicorn, gevent worker), runs fed through the run store's scripts by the "
        f"bench; {limits}; {host()}"
    )
    return [
        figure("event_latency_10000", latency, "ms", setup),
        figure("web_rss_mb_10000", round(watch.max_rss_mb, 1), "MB", setup),
        figure("web_redis_connections_10000", watch.max_connections, "connections", setup),
    ]


# -- a reconnect storm -------------------------------------------------------------------

STORM_RUNS, STORM_PER_RUN = 100, 10
#: Events each run holds before the storm: what every joiner replays first.
STORM_HISTORY = 300
#: Events per second each run appends, throughout (as in the 1,000-subscriber figures).
STORM_RATE = 2.0
#: Seconds of steady state measured before the storm, and the most it may take.
STEADY_S, STORM_MAX_S = 6.0, 30.0


def storm_figure(stack: StreamingStack) -> dict[str, Any]:
    """Live delivery to 1,000 SSE subscribers of 100 runs while 1,000 more join at once,
    each replaying its run from the start, against the steady state before."""
    url, env = side_env(stack, 2)
    web = start_web(env, stack.log_dir, "web-storm")
    runs = LiveRuns(url, STORM_RUNS, history=STORM_HISTORY)
    followers = Crowd(
        web.url,
        [
            Job(r, "sse", after=last_id(stack, url, r), skip=STORM_HISTORY + 3)
            for _ in range(STORM_PER_RUN)
            for r in runs.run_ids
        ],
        2,
    )
    joiners = Crowd(web.url, [Job(r, "sse") for _ in range(STORM_PER_RUN) for r in runs.run_ids], 2)
    stop = threading.Event()
    publisher = threading.Thread(
        target=runs.publish, args=(STORM_RATE, STEADY_S + 1 + STORM_MAX_S, stop), daemon=True
    )
    try:
        followers.go()
        followers.connected()
        publisher.start()
        time.sleep(1.0)  # the first ticks reach everyone before the steady state counts
        steady_start = time.time()
        time.sleep(STEADY_S)
        storm_start = time.time()
        joiners.go()
        first, last = joiners.connected()
        publisher.join()
        runs.finish()
        followed = followers.outcomes()
        joined = joiners.outcomes()
        lengths = runs.lengths()
    finally:
        stop.set()
        followers.kill()
        joiners.kill()
        runs.close()
        web.kill()
    drained = all(o.caught_up for o in joined)
    if step := timeline_step():
        print(f"storm {storm_start:.1f} steady {steady_start:.1f}", file=sys.stderr)
        print(timeline(followed, step), file=sys.stderr)
    storm_end = max((o.caught_up for o in joined), default=storm_start)
    steady = percentiles(list(samples_between(followed, steady_start, storm_start)))
    during = list(samples_between(followed, storm_start, storm_end))
    storm = percentiles(during) | {"max": round(max(during, default=0.0), 1)}
    ratio = round(storm["p99"] / steady["p99"], 2) if steady["p99"] else None
    return figure(
        "storm_latency_1000",
        storm | {"steady_p50": steady["p50"], "steady_p99": steady["p99"], "ratio_p99": ratio},
        "ms",
        f"live delivery to {len(followed)} SSE subscribers of {STORM_RUNS} runs (each run "
        f"appending {STORM_RATE:g} events/s) while {len(joined)} more join within "
        f"{last - first:.2f} s, each replaying its run's {STORM_HISTORY}+ events from the "
        f"start; storm {storm_end - storm_start:.1f} s until the last joiner was live"
        f"{'' if drained else ' (NOT every joiner caught up)'}; {len(during)} deliveries "
        f"during it; steady state: the {STEADY_S:g} s before; followers: "
        f"{everyone_once(followed, lengths)}; joiners: {everyone_once(joined, lengths)}; "
        f"one web process (gunicorn, gevent worker), {host()}",
    )


def timeline_step() -> float:
    """`STEPSTREAM_BENCH_TIMELINE`: print latency over time, by steps of that many
    seconds ("1": by second; unset: no timeline)."""
    return float(os.environ.get("STEPSTREAM_BENCH_TIMELINE") or 0)


def last_id(stack: StreamingStack, url: str, run_id: str) -> str:
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        last = cast("list[Any]", client.xrevrange(keys.run_events(run_id), count=1))
        return str(last[0][0])
    finally:
        client.close()
