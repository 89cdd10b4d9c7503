"""The all-runs stream: a copy of every run's events, best effort, off the step path."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
import redis
from clients import submit, ws_events
from conftest import ONE_STEP, LiveServer, WorkerProcess, wait_for

from devtools.redis_server import free_port
from tasks import keys
from tasks.config import Settings
from tasks.events import Event
from tasks.feed import QUEUE_SIZE, AllEventsFeed
from tasks.store import RunStore


def test_every_event_of_a_run_reaches_the_all_runs_stream(
    live_server: LiveServer, worker: WorkerProcess, r: redis.Redis
) -> None:
    run = submit(live_server.url, "hello_sequence", {"name": "Feed"})
    events, _ = ws_events(live_server.ws_url, run["run_id"])

    def copied() -> list[dict[str, Any]]:
        entries = r.xrange(keys.all_events())
        mine = [json.loads(f["data"]) for _, f in entries]
        return [e for e in mine if e["run_id"] == run["run_id"]]

    wait_for(lambda: len(copied()) == len(events), what="the copies of every event")
    assert sorted(copied(), key=lambda e: e["seq"]) == events


@pytest.mark.slow
def test_the_feed_drops_rather_than_blocks_when_redis_is_gone() -> None:
    dead = redis.Redis(port=free_port(), socket_connect_timeout=0.2)
    feed = AllEventsFeed(dead, maxlen=100)
    events = [Event.from_data(f"1-{i}", {"seq": i}) for i in range(5)]
    feed.put(events)  # returns at once whatever Redis does
    assert feed.flush(timeout=10)
    assert feed.dropped == 5


def test_a_forked_child_gets_its_own_feed_thread(r: redis.Redis) -> None:
    feed = AllEventsFeed(r, maxlen=100)
    feed.put([Event.from_data("1-1", {"seq": 1, "run_id": "parent"})])
    assert feed.flush()
    pid = os.fork()
    if pid == 0:  # the child: the parent's thread does not exist here
        feed.put([Event.from_data("1-2", {"seq": 2, "run_id": "child"})])
        os._exit(0 if feed.flush() else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    runs = [json.loads(f["data"])["run_id"] for _, f in r.xrange(keys.all_events())]
    assert runs == ["parent", "child"]


def test_past_its_queue_the_feed_drops_the_newest_events_and_counts_them(r: redis.Redis) -> None:
    feed = AllEventsFeed(r, maxlen=100_000)
    events = [Event.from_data(f"1-{i}", {"seq": i}) for i in range(1, QUEUE_SIZE + 6)]
    feed.put(events)  # more than the queue holds, in one call
    assert feed.flush(timeout=30)
    assert feed.dropped == 5
    copied = [json.loads(f["data"])["seq"] for _, f in r.xrange(keys.all_events())]
    assert copied == list(range(1, QUEUE_SIZE + 1))


def test_a_scripts_events_are_in_the_all_runs_stream_when_it_returns_in_order(
    settings: Settings, r: redis.Redis
) -> None:
    """Every event but a new run's run_queued is copied by the script that appends it:
    present as soon as the call returns, in the run's own order, with its id."""
    store = RunStore.from_settings(settings)
    run_id = "all-runs-order"
    store.create_run(run_id, ONE_STEP, {})
    assert r.xlen(keys.all_events()) == 0  # run_queued: the web copies it after sending
    store.start_step(run_id, "only", 1, "w@test")
    batch = [
        ("step_progress", {"progress": n / 5, "message": str(n)}, n / 5, n) for n in range(1, 6)
    ]
    store.step_events(run_id, "only", 1, batch)  # type: ignore[arg-type]
    store.finish_step(run_id, "only", 1, "succeeded", "", "1")
    copies = [json.loads(f["data"]) for _, f in r.xrange(keys.all_events())]
    own = [{**json.loads(f["data"]), "id": i} for i, f in r.xrange(keys.run_events(run_id))]
    assert copies == own[1:]
    assert [c["type"] for c in copies] == [
        "run_started",
        "step_started",
        *["step_progress"] * 5,
        "step_finished",
        "run_finished",
    ]
