"""A POST whose roots reached the broker but whose answer was lost (SPEC §6: 503 means
nothing half-created): its runs either went on, and the POST answers 202, or are
withdrawn whole, and a root message that did arrive starts nothing."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import redis
from blackhole import BlackHoleProxy
from conftest import WorkerProcess, serve, wait_for
from stacks import BROKER_DB, Stack

from devtools.celery_worker import start_worker
from devtools.redis_server import RedisServer
from tasks import keys

pytestmark = pytest.mark.slow

BODY = {"scenario_id": "hello_sequence", "input": {"name": "Lost reply"}}


@pytest.fixture
def proxy(redis_server: RedisServer) -> Iterator[BlackHoleProxy]:
    with BlackHoleProxy(redis_server.port) as hole:
        yield hole


def copies_of(r: redis.Redis, run_id: str) -> list[str]:
    """The types of the run's events in the all-runs stream, in order."""
    events = [json.loads(f["data"]) for _, f in r.xrange(keys.all_events())]
    return [e["type"] for e in events if e["run_id"] == run_id]


def test_runs_a_worker_started_despite_the_lost_answer_are_answered_202_and_run_once(
    app_factory: Callable[..., Any], proxy: BlackHoleProxy, worker: WorkerProcess, r: redis.Redis
) -> None:
    app = app_factory(broker_url=proxy.url(BROKER_DB))
    with serve(app) as web, httpx.Client(base_url=web.url, timeout=60) as http:
        assert http.post("/api/runs", json=BODY).status_code == 202  # connects first
        proxy.lose_replies()  # the broker takes the roots; the web never hears back
        answer = http.post("/api/runs", json=BODY)
        proxy.forward()
    assert answer.status_code == 202, answer.text
    run_id = answer.json()["run_id"]
    wait_for(lambda: r.hget(keys.run(run_id), "status") == "succeeded", what="the run")
    # run_queued is copied by the web once its send returned: here, after the rest.
    types = wait_for(
        lambda: (t := copies_of(r, run_id)) and {"run_queued", "run_finished"} <= set(t) and t,
        what="its copies",
    )
    assert types.count("step_started") == 3  # each of its three steps ran once
    assert types.count("run_started") == 1


def test_runs_no_worker_took_are_withdrawn_whole_and_their_roots_start_nothing(
    app_factory: Callable[..., Any],
    proxy: BlackHoleProxy,
    isolated_stack: Stack,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    store = isolated_stack.store()
    broker = redis.Redis.from_url(isolated_stack.broker_url)
    app = app_factory(
        redis_url=isolated_stack.redis_url, broker_url=proxy.url(isolated_stack.broker_db)
    )
    with serve(app) as web, httpx.Client(base_url=web.url, timeout=60) as http:
        kept = http.post("/api/runs", json=BODY)  # no worker yet: it stays queued
        assert kept.status_code == 202
        proxy.lose_replies()
        refused = http.post("/api/runs/batch", json={"runs": [BODY, BODY]})
        proxy.forward()
    assert refused.status_code == 503, refused.text

    # The batch's roots did reach the broker: the queue holds them beside the kept run's.
    sent = [json.loads(m) for m in broker.lrange("stepstream", 0, -1)]
    run_ids = {json.loads(base64.b64decode(m["body"]))[0][0] for m in sent}
    withdrawn = run_ids - {kept.json()["run_id"]}
    assert len(withdrawn) == 2
    for run_id in withdrawn:
        assert not store.exists(*keys.run_keys(run_id))
        assert store.zscore(keys.runs_index(), run_id) is None

    # A worker now takes every message: the kept run runs, the withdrawn ones start nothing.
    late = start_worker(isolated_stack.env, "late", tmp_path_factory.mktemp("late"))
    try:
        wait_for(
            lambda: store.hget(keys.run(kept.json()["run_id"]), "status") == "succeeded",
            what="the kept run",
        )
        wait_for(lambda: broker.llen("stepstream") == 0, what="every message taken")
        wait_for(lambda: not broker.hlen("unacked"), what="every message handled")
    finally:
        late.stop()
    for run_id in withdrawn:
        assert not store.exists(*keys.run_keys(run_id))
        assert copies_of(store, run_id) == []
    store.close()
    broker.close()
