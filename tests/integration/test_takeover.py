"""Lost-run takeover: a killed worker process or node never leaves a run `running`."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from clients import Follower, submit
from conftest import LiveServer, Stack, WorkerProcess, serve, start_web, start_worker, wait_for

from client.follow import Follower as LibraryFollower
from tasks import keys

#: Workers and web processes killed, nodes taken over: left out of `make test-fast`.
pytestmark = pytest.mark.slow


def follow(server: LiveServer, run_id: str) -> LibraryFollower:
    """The run's events over WebSocket, each once, to `run_finished` (the client
    library's follower, which resumes if the connection drops)."""
    return LibraryFollower(server.url, run_id, "ws", read_timeout=60)


def check_resumed_run(events: list[dict[str, Any]], reason: str = "worker_lost") -> None:
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert [e["type"] for e in events].count("run_finished") == 1
    resumed = [e for e in events if e["type"] == "run_resumed"]
    assert len(resumed) == 1 and resumed[0]["reason"] == reason
    started = [(e["step"], e["attempt"]) for e in events if e["type"] == "step_started"]
    # The step that had finished is kept; the lost one runs again as attempt 2, once.
    assert started == [("first", 1), ("nap", 1), ("nap", 2), ("last", 1)]
    assert events[-1]["status"] == "succeeded"
    last = next(e for e in events if e["type"] == "step_finished" and e["step"] == "last")
    assert last["output"] == {"after": 2}


def test_a_killed_worker_process_is_taken_over_at_once(
    live_server: LiveServer, worker: WorkerProcess
) -> None:
    run = submit(live_server.url, "test_takeover")
    events = []
    for event in follow(live_server, run["run_id"]):
        events.append(event)
        if event["type"] == "step_log" and event["step"] == "nap" and event["attempt"] == 1:
            os.kill(int(event["message"].split()[-1]), signal.SIGKILL)  # the prefork child
    check_resumed_run(events)


@pytest.fixture
def isolated(
    isolated_stack: Stack, app_factory: Callable[..., Any]
) -> Iterator[tuple[dict[str, str], Any]]:
    """Store and broker databases of their own, so only the workers started here work."""
    yield isolated_stack.env, app_factory(**isolated_stack.urls)


def test_a_killed_worker_node_is_taken_over_by_another(
    isolated: tuple[dict[str, str], Any], tmp_path_factory: pytest.TempPathFactory
) -> None:
    env, app = isolated
    logs = tmp_path_factory.mktemp("takeover")
    workers = {w.name: w for w in (start_worker(env, n, logs) for n in ("w8", "w9"))}
    client = redis.Redis.from_url(env["STEPSTREAM_REDIS_URL"], decode_responses=True)
    try:
        with serve(app) as server:
            run = submit(server.url, "test_takeover")
            steps = keys.run_steps(run["run_id"])
            holder = wait_for(
                lambda: (
                    client.hget(steps, "nap.status") == "running"
                    and client.hget(steps, "nap.worker")
                ),
                what="the nap step running",
            )
            doomed = workers[holder.split("@")[0]]
            os.killpg(doomed.proc.pid, signal.SIGKILL)  # the whole node, no goodbye
            doomed.proc.wait(timeout=10)
            events = list(follow(server, run["run_id"]))
        check_resumed_run(events)
        survivor = next(w for name, w in workers.items() if w is not doomed)
        resumed = next(e for e in events if e["type"] == "run_resumed")
        assert resumed["worker"].startswith(f"{survivor.name}@")
    finally:
        for w in workers.values():
            w.stop()


def test_after_max_resumes_the_run_fails_with_worker_lost(
    isolated: tuple[dict[str, str], Any], tmp_path_factory: pytest.TempPathFactory
) -> None:
    env, app = isolated
    w = start_worker(
        {**env, "STEPSTREAM_MAX_RESUMES": "0"}, "w7", tmp_path_factory.mktemp("maxres")
    )
    try:
        with serve(app) as server:
            run = submit(server.url, "test_takeover")
            events = []
            for event in follow(server, run["run_id"]):
                events.append(event)
                if event["type"] == "step_log" and event["step"] == "nap":
                    os.kill(int(event["message"].split()[-1]), signal.SIGKILL)
        finished = {e["step"]: e for e in events if e["type"] == "step_finished"}
        assert finished["first"]["status"] == "succeeded"
        assert finished["nap"]["status"] == "failed"
        assert "lost its worker" in finished["nap"]["message"]
        assert finished["last"]["status"] == "skipped"
        final = events[-1]
        assert final["type"] == "run_finished" and final["status"] == "failed"
        assert final["reason"] == "worker_lost"
        assert [e["type"] for e in events].count("run_resumed") == 0
    finally:
        w.stop()


def test_a_killed_web_process_loses_no_subscriber_event(
    base_env: dict[str, str], worker: WorkerProcess, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Two web processes behind one address, as a load balancer would have them; the
    one that clients follow is SIGKILLed and they resume on the other with `after`."""
    logs = tmp_path_factory.mktemp("webs")
    webs = [start_web(base_env, logs, name) for name in ("web-a", "web-b")]
    try:
        run = submit(webs[0].url, "test_slow_progress", {"seconds": 2})
        urls = [w.url for w in webs]
        followers = [Follower(urls, run["run_id"], t) for t in ("ws", "sse")]
        threads = [threading.Thread(target=f.run, daemon=True) for f in followers]
        for thread in threads:
            thread.start()
        wait_for(
            lambda: all(
                sum(e["type"] == "step_progress" for e in f.events) >= 2 for f in followers
            ),
            what="both clients following the long step",
        )
        webs[0].kill()
        for thread in threads:
            thread.join(timeout=60)
        client = redis.Redis.from_url(base_env["STEPSTREAM_REDIS_URL"], decode_responses=True)
        stored = [i for i, _ in client.xrange(keys.run_events(run["run_id"]))]
        client.close()
        for follower in followers:
            assert follower.finished, follower.transport
            assert [e["id"] for e in follower.events] == stored  # each event once, in order
            assert follower.cut_short >= 1 and follower.base_url == webs[1].url
            assert follower.events[-1]["status"] == "succeeded"
    finally:
        for web in webs:
            web.kill()


def test_one_lost_node_never_fails_a_run_by_itself(
    isolated: tuple[dict[str, str], Any], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Three parallel steps of one run die with their node: each is resumed once, and
    resumes are counted per step, so the default limit (2) is far from reached."""
    env, app = isolated
    logs = tmp_path_factory.mktemp("fair")
    doomed = start_worker(env, "w5", logs, concurrency=3)
    client = redis.Redis.from_url(env["STEPSTREAM_REDIS_URL"], decode_responses=True)
    survivor = None
    try:
        with serve(app) as server:
            run = submit(server.url, "test_three_naps")
            steps = keys.run_steps(run["run_id"])
            wait_for(
                lambda: all(client.hget(steps, f"{s}.status") == "running" for s in "abc"),
                what="the three naps running on one node",
            )
            survivor = start_worker(env, "w6", logs, concurrency=3)
            os.killpg(doomed.proc.pid, signal.SIGKILL)
            doomed.proc.wait(timeout=10)
            events = list(follow(server, run["run_id"]))
        final = events[-1]
        assert final["type"] == "run_finished" and final["status"] == "succeeded", final
        started = sorted((e["step"], e["attempt"]) for e in events if e["type"] == "step_started")
        assert started == [("a", 1), ("a", 2), ("b", 1), ("b", 2), ("c", 1), ("c", 2), ("join", 1)]
        assert [e["type"] for e in events].count("run_resumed") == 3
    finally:
        client.close()
        for w in (doomed, survivor):
            if w is not None:
                w.stop()
