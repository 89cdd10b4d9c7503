"""The all-runs stream: a copy of every run's events, best effort, off the step path."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
import redis
from clients import submit, ws_events
from conftest import LiveServer, WorkerProcess, wait_for

from devtools.redis_server import free_port
from tasks import keys
from tasks.events import Event
from tasks.feed import QUEUE_SIZE, AllEventsFeed


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
