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
import websockets

from client.follow import Cursor
from client.sse import SSEDecoder
from client.streams import ws_url
from devtools.celery_worker import start_worker
from devtools.processes import child_pids
from devtools.redis_server import RedisServer
from devtools.web_server import WebProcess, start_web
from tasks import keys
from web import WEB_CLIENT_NAME

from .api import wait_finished
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


def streaming_figures(stack: StreamingStack) -> Iterator[dict[str, Any]]:
    ws = live_latency(stack, "ws")
    yield figure("event_latency_1000", ws["latency"], "ms", ws["setup"])
    yield figure("web_redis_connections_1000", ws["connections"], "connections", ws["setup"])
    yield figure("web_rss_mb_1000", ws["rss_mb"], "MB", ws["setup"])
    sse = live_latency(stack, "sse")
    yield figure("sse_latency_1000", sse["latency"], "ms", sse["setup"])
    peer = flask_sse_latency(stack)
    yield figure("flask_sse_latency_1000", peer["latency"], "ms", peer["setup"])
    yield figure(
        "flask_sse_redis_connections_1000", peer["connections"], "connections", peer["setup"]
    )
    yield from publish_and_replay(stack)
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


async def ws_events(base_url: str, path: str) -> Any:
    """A run's events over one WebSocket (asyncio), each checked by the client's
    resume bookkeeping (no repeat, no gap); `(None, t)` when connected."""
    cursor = Cursor()
    async with websockets.connect(ws_url(base_url) + path, max_size=None, open_timeout=60) as ws:
        yield None, time.time()  # connected
        async for message in ws:
            event, received = json.loads(message), time.time()
            if cursor.accept(event["id"], event.get("seq"), event["type"]):
                yield event, received


async def sse_events(base_url: str, path: str) -> Any:
    """The same over SSE."""
    cursor = Cursor()
    async for message, received in raw_sse(base_url, path):
        if message is None:
            yield None, received
            continue
        event = json.loads(message.data)
        if cursor.accept(message.id, event.get("seq"), event["type"]):
            yield event, received


async def raw_sse(base_url: str, path: str) -> Any:
    """A minimal asyncio SSE client, for thousands at once: HTTP/1.0, so the body is the
    stream as it is until the end, parsed by the client's decoder (client/sse.py).
    Yields each message with the time its bytes arrived; `(None, t)` when connected."""
    hostport = base_url.split("//", 1)[1]
    hostname, port = hostport.split(":")
    reader, writer = await asyncio.open_connection(hostname, int(port), limit=1 << 22)
    writer.write(
        f"GET {path} HTTP/1.0\r\nHost: {hostport}\r\nAccept: text/event-stream\r\n\r\n".encode()
    )
    try:
        while (await reader.readline()) not in (b"\r\n", b"\n", b""):
            pass  # the status line and headers
        yield None, time.time()  # connected
        decoder = SSEDecoder()
        while True:
            chunk = await reader.read(1 << 16)
            received = time.time()
            for message in decoder.feed_bytes(chunk):
                yield message, received
            if not chunk:
                return
    finally:
        writer.close()


class ResourceWatch:
    """Samples the web process's Redis connections and resident memory while in use."""

    def __init__(self, stack: StreamingStack, name: str = WEB_CLIENT_NAME) -> None:
        self.stack = stack
        self.name = name
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
        pid = self.stack.web_worker_pid()
        while not self._stop.wait(0.5):
            clients = self.stack.redis.client_list()
            count = sum(1 for c in clients if c.get("name") == self.name)
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
            async for sse, received in raw_sse(web.url, f"/stream?channel=c{channel}"):
                if sse is None:
                    continue
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
        f"run_finished (over WebSocket, measured next: {round(count / ws_s)}/s, where the "
        f"Python client's frame parsing is the limit); {SETUP}, {host()}",
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


def run(emit: Callable[..., None]) -> None:
    with streaming_stack() as stack:
        for result in streaming_figures(stack):
            emit(result)
