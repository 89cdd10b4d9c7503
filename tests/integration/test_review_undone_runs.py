"""Review: a run whose POST was answered 503 because the broker did not answer is
undone; it must never show up in the all-runs stream (README, tasks/feed.py), and it
must not have run (SPEC §6: 503, nothing half-created)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import redis
from blackhole import BlackHoleProxy
from conftest import WorkerProcess, serve, wait_for
from stacks import BROKER_DB

from devtools.redis_server import RedisServer
from tasks import keys

pytestmark = pytest.mark.slow

BODY = {"scenario_id": "hello_sequence", "input": {"name": "Undone"}}


@pytest.fixture
def proxy(redis_server: RedisServer) -> Iterator[BlackHoleProxy]:
    with BlackHoleProxy(redis_server.port) as hole:
        yield hole


def test_a_run_answered_503_for_a_lost_broker_reply_never_runs_nor_shows_in_the_all_runs_stream(
    app_factory: Callable[..., Any],
    proxy: BlackHoleProxy,
    worker: WorkerProcess,
    r: redis.Redis,
) -> None:
    # The web sends to the broker the session worker consumes, through the proxy.
    app = app_factory(broker_url=proxy.url(BROKER_DB))
    with serve(app) as web, httpx.Client(base_url=web.url, timeout=30) as http:
        first = http.post("/api/runs", json=BODY)  # the broker connection, made first
        assert first.status_code == 202, first.text
        accepted = first.json()["run_id"]
        wait_for(lambda: r.hget(keys.run(accepted), "status") == "succeeded", what="run 1")

        # The broker gets the roots' message but its reply is lost: the web cannot
        # tell, answers 503 and undoes the run, while the worker already has it.
        proxy.lose_replies()
        refused = http.post("/api/runs", json=BODY)
        proxy.forward()
    assert refused.status_code == 503, refused.text

    def others() -> set[str]:
        seen = {json.loads(f["data"])["run_id"] for _, f in r.xrange(keys.all_events())}
        return seen - {accepted}

    # A worker that got the message appends its events through the scripts, which copy
    # them at once: wait a few seconds for any copy of the undone run to appear.
    try:
        leaked = wait_for(others, timeout=5, what="a copy of the undone run")
    except AssertionError:
        leaked = set()  # none came: as it should be
    copies = [
        json.loads(f["data"])["type"]
        for _, f in r.xrange(keys.all_events())
        if json.loads(f["data"])["run_id"] in leaked
    ]
    exists = [r.exists(keys.run(run_id)) for run_id in leaked]
    assert not leaked, (
        f"the run {leaked} answered 503 and undone (its record exists: {exists}) ran, and "
        f"its events are in the all-runs stream: {copies}"
    )
