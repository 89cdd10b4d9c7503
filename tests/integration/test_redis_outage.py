"""Redis goes away mid-run and comes back (a real restart, append-only persistence).

The worker's writes are retried and land once each, in order; the API answers 503
while Redis is gone; WebSocket and SSE clients are cut off and resume with `after`
(or Last-Event-ID) and see every event exactly once; the run ends by itself.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from clients import Follower, submit
from conftest import LiveServer, WorkerProcess, serve, start_worker, wait_for
from stacks import layout

from devtools.redis_server import RedisServer

#: Minutes of real processes and faults: left out of `make test-fast`.
pytestmark = pytest.mark.slow

#: How long Redis stays down: the fault being injected, not a wait for a result.
OUTAGE_S = 1.5


@pytest.fixture
def restartable(
    tmp_path: Path, base_env: dict[str, str], app_factory: Callable[..., Any]
) -> Iterator[tuple[RedisServer, WorkerProcess, LiveServer]]:
    """A Redis of this test's own (so restarting it disturbs no other test), with a
    worker and a web server that use it for both the store and the broker."""
    with RedisServer(port=0, data_dir=tmp_path / "redis", appendonly=True) as server:
        url, broker = layout(server.url)
        env = {**base_env, "STEPSTREAM_REDIS_URL": url, "STEPSTREAM_BROKER_URL": broker}
        worker = start_worker(env, "outage", tmp_path)
        try:
            with serve(app_factory(redis_url=url, broker_url=broker)) as web:
                yield server, worker, web
        finally:
            worker.stop()


def test_a_redis_restart_mid_run_loses_repeats_and_reorders_nothing(
    restartable: tuple[RedisServer, WorkerProcess, LiveServer],
) -> None:
    server, worker, web = restartable
    run = submit(web.url, "test_slow_progress", {"seconds": 3})
    followers = [Follower(web.url, run["run_id"], t) for t in ("ws", "sse")]
    threads = [threading.Thread(target=f.run, daemon=True) for f in followers]
    for thread in threads:
        thread.start()

    def long_step_progressed() -> bool:
        return all(sum(e["type"] == "step_progress" for e in f.events) >= 3 for f in followers)

    wait_for(long_step_progressed, timeout=30, what="progress of the long step")
    server.stop()
    outage_ends = time.monotonic() + OUTAGE_S
    # While Redis is gone the API says so, quickly, instead of hanging or failing.
    started = time.monotonic()
    response = httpx.get(f"{web.url}/api/runs/{run['run_id']}", timeout=10)
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "unavailable"
    assert time.monotonic() - started < 5
    wait_for(lambda: all(f.cut_short for f in followers), timeout=10, what="clients cut off")
    time.sleep(max(0.0, outage_ends - time.monotonic()))  # the rest of the outage
    server.start()

    for thread in threads:
        thread.join(timeout=60)
    client = redis.Redis.from_url(server.url, decode_responses=True)
    try:
        stored = [
            (entry_id, fields["data"])
            for entry_id, fields in client.xrange(f"stepstream:run:{{{run['run_id']}}}:events")
        ]
    finally:
        client.close()
    for follower in followers:
        assert follower.finished, (follower.transport, follower.events[-3:])
        events = follower.events
        # Exactly once, in order: what the client saw is the stream, entry for entry.
        assert [e["id"] for e in events] == [entry_id for entry_id, _ in stored]
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        assert [e["type"] for e in events].count("run_finished") == 1
        assert events[-1]["status"] == "succeeded", events[-1]
        ticks = [e["message"] for e in events if e["type"] == "step_progress"]
        assert ticks == [f"{i}/15" for i in range(1, 16)]
        started_steps = [e["step"] for e in events if e["type"] == "step_started"]
        assert started_steps == ["first", "long", "last"]  # no attempt ran twice
        assert follower.connections >= 2
    assert "Traceback" not in worker.log(), worker.log()[-3000:]


def test_dropped_connections_mid_step_never_run_a_step_twice(
    restartable: tuple[RedisServer, WorkerProcess, LiveServer],
) -> None:
    """Every client connection is cut while a step runs, Redis itself staying up.

    The worker's consumer reconnects and Celery puts the running step's unacknowledged
    message back in the queue, so a copy is delivered while the first execution still
    runs: the copy must see that and do nothing.
    """
    server, worker, web = restartable
    run = submit(web.url, "test_slow_progress", {"seconds": 2})
    follower = Follower(web.url, run["run_id"], "ws")
    thread = threading.Thread(target=follower.run, daemon=True)
    thread.start()
    wait_for(
        lambda: sum(e["type"] == "step_progress" for e in follower.events) >= 3,
        what="progress of the long step",
    )
    admin = redis.Redis.from_url(server.url, decode_responses=True)
    try:
        admin.client_kill_filter(_type="normal", skipme=True)
        thread.join(timeout=60)
        task_id = admin.hget(f"stepstream:run:{{{run['run_id']}}}:steps", "long.task_id")
    finally:
        admin.close()
    events = follower.events
    assert follower.finished and events[-1]["status"] == "succeeded", events[-3:]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert [e["type"] for e in events].count("run_resumed") == 0
    started = [(e["step"], e["attempt"]) for e in events if e["type"] == "step_started"]
    assert started == [("first", 1), ("long", 1), ("last", 1)]
    ticks = [e["message"] for e in events if e["type"] == "step_progress"]
    assert ticks == [f"{i}/15" for i in range(1, 16)]
    # The copy was delivered while the first execution ran, and did nothing.
    assert worker.log().count(f"run_step[{task_id}] received") == 2


def test_a_run_whose_redis_data_is_lost_is_gone_cleanly(
    restartable: tuple[RedisServer, WorkerProcess, LiveServer],
) -> None:
    """Redis restarts with its data gone (as one without persistence would): the run
    is unknown from then on, the step still running writes nothing back (no partial
    run reappears), and new runs work."""
    server, worker, web = restartable
    run = submit(web.url, "test_slow_progress", {"seconds": 1.5})
    run_url = f"{web.url}/api/runs/{run['run_id']}"
    wait_for(
        lambda: httpx.get(run_url).json()["steps"][1]["progress"] > 0,
        what="the long step under way",
    )
    server.stop()
    for path in server.data_dir.iterdir():
        if path.name != "redis.log":
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    server.start()

    wait_for(lambda: httpx.get(run_url).status_code == 404, what="the run to be unknown")

    def steps_ended() -> int:
        return sum(
            "run_step[" in line and "succeeded" in line for line in worker.log().splitlines()
        )

    wait_for(lambda: steps_ended() >= 2, what="the long step to end (after the first)")
    client = redis.Redis.from_url(server.url, decode_responses=True)
    try:
        assert not client.keys(f"stepstream:run:{{{run['run_id']}}}*")
    finally:
        client.close()
    after = submit(web.url, "hello_sequence", {"name": "again"})
    wait_for(
        lambda: httpx.get(f"{web.url}/api/runs/{after['run_id']}").json()["status"] == "succeeded",
        what="a new run to succeed",
    )
