"""Clocks that disagree between hosts decide nothing: liveness is judged on Redis' clock.

A worker whose wall clock is a minute behind (or ahead) is shown `ok`, and a step it
runs for longer than the stale threshold is never taken over while it is alive.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from conftest import Stack, events_until_finished, start_worker, wait_for

from tasks import keys

#: Minutes of real processes and faults: left out of `make test-fast`.
pytestmark = pytest.mark.slow

SKEWED = Path(__file__).resolve().parent.parent / "skewed_clock"


@pytest.mark.parametrize("offset_s", [-60, 60])
def test_a_worker_with_a_skewed_clock_is_alive_and_never_taken_over(
    offset_s: int,
    isolated_stack: Stack,
    app_factory: Callable[..., Any],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    env = isolated_stack.env
    skewed_env = {
        **env,
        "STEPSTREAM_TEST_CLOCK_OFFSET_S": str(offset_s),
        "PYTHONPATH": os.pathsep.join([str(SKEWED), env["PYTHONPATH"]]),
    }
    app = app_factory(**isolated_stack.urls)
    client = app.test_client()
    logs = tmp_path_factory.mktemp("skew")
    skewed = start_worker(skewed_env, "skewed", logs, concurrency=1)
    sweeper = None
    try:
        # 5 s of work: longer than the 3 s (3 heartbeats) after which a silent worker
        # would be stale, so a misjudged heartbeat would get the step taken over.
        response = client.post(
            "/api/runs", json={"scenario_id": "test_slow_progress", "input": {"seconds": 5}}
        )
        run_id = response.get_json()["run_id"]
        steps = keys.run_steps(run_id)
        store = redis.Redis.from_url(env["STEPSTREAM_REDIS_URL"], decode_responses=True)
        wait_for(lambda: store.hget(steps, "long.status") == "running", what="the long step")
        # A healthy peer that sweeps: it would take over a step of a worker it
        # believed dead.
        sweeper = start_worker(env, "peer", logs, concurrency=1)
        workers = {w["name"].split("@")[0]: w for w in client.get("/api/workers").get_json()}
        assert workers["skewed"]["status"] == "ok", workers["skewed"]
        # The skew is real: the worker's own idea of when it started is off by it.
        assert abs(workers["skewed"]["extra"]["started_at"] - time.time() - offset_s) < 30
        assert abs(workers["skewed"]["seconds_since"]) < 5
        assert client.get("/readyz").status_code == 200

        events = events_until_finished(store, run_id, timeout=30, what="the run to finish")
        assert events[-1]["status"] == "succeeded"
        assert not [e for e in events if e["type"] == "run_resumed"]
        started = [(e["step"], e["attempt"]) for e in events if e["type"] == "step_started"]
        assert started == [("first", 1), ("long", 1), ("last", 1)]
        workers = {w["name"].split("@")[0]: w for w in client.get("/api/workers").get_json()}
        assert workers["skewed"]["status"] == "ok"
        store.close()
    finally:
        for w in (skewed, sweeper):
            if w is not None:
                w.stop()
