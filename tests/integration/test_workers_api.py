"""`GET /api/workers` and `/readyz` against real worker processes."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
from clients import submit, ws_events
from conftest import LiveServer, Stack, WorkerProcess, start_worker, wait_for

from tasks import keys


def listed(client: Any) -> dict[str, dict[str, Any]]:
    response = client.get("/api/workers")
    assert response.status_code == 200
    return {w["name"].split("@")[0]: w for w in response.json}


def test_a_live_worker_is_ok_and_counts_its_work(
    live_server: LiveServer, worker: WorkerProcess, r: redis.Redis
) -> None:
    client = live_server.app.test_client()
    row = wait_for(lambda: listed(client).get("w1"), what="w1 in the registry")
    assert row["status"] == "ok" and row["seconds_since"] < 3
    assert row["extra"]["pid"] == worker.proc.pid and row["extra"]["concurrency"] == 2
    before = row["processed"]
    run = submit(live_server.url, "hello_sequence", {"name": "Reg"})
    ws_events(live_server.ws_url, run["run_id"])
    # Three run_step tasks (a run has no task of its own), reported with the next heartbeat.
    wait_for(lambda: listed(client)["w1"]["processed"] >= before + 3, what="processed count")


def test_expected_but_silent_workers_are_unknown(
    app_factory: Callable[..., Any], worker: WorkerProcess, r: redis.Redis
) -> None:
    client = app_factory(expected_workers=("ghost@nowhere",)).test_client()
    ghost = wait_for(lambda: listed(client).get("ghost"), what="the expected worker listed")
    assert ghost["status"] == "unknown" and ghost["last_heartbeat"] is None


@pytest.mark.slow
def test_a_killed_worker_goes_stale_and_readyz_follows(
    app_factory: Callable[..., Any],
    isolated_stack: Stack,
    tmp_path_factory: pytest.TempPathFactory,
    r: redis.Redis,
    settings: Any,
) -> None:
    # A store database of its own: no other worker's heartbeat keeps /readyz green.
    doomed = start_worker(isolated_stack.env, "w5", tmp_path_factory.mktemp("logs5"))
    client = app_factory(**isolated_stack.urls).test_client()
    try:
        wait_for(lambda: client.get("/readyz").status_code == 200, what="ready")
        os.killpg(doomed.proc.pid, signal.SIGKILL)  # no goodbye: the row stays
        doomed.proc.wait(timeout=10)
        stale = wait_for(
            lambda: (w := listed(client).get("w5")) and w["status"] == "stale" and w,
            what="w5 stale",
        )
        assert stale["seconds_since"] > 3 * settings.heartbeat_s
        response = client.get("/readyz")
        assert response.status_code == 503 and response.json["reason"] == "no live worker"
    finally:
        doomed.stop()


def test_rows_silent_for_a_day_are_forgotten(client: Any, r: redis.Redis) -> None:
    # A day cannot be waited for: the row is written as a heartbeat from a day ago.
    old = {"name": "gone@h", "last_heartbeat": time.time() - 86_401}
    r.hset(keys.workers(), "gone@h", json.dumps(old))
    assert "gone" not in listed(client)
    assert not r.hexists(keys.workers(), "gone@h")
