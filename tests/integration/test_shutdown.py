"""SIGTERM: running steps get the grace, then are handed to another worker."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from clients import submit, ws_events
from conftest import WorkerProcess, serve, start_worker, wait_for
from stacks import Databases

from tasks import keys

#: Worker nodes stopped with their grace running out: left out of `make test-fast`.
pytestmark = pytest.mark.slow

GRACE_S = 2.0


@pytest.fixture
def pair(
    databases: Databases,
    base_env: dict[str, str],
    app_factory: Callable[..., Any],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[dict[str, WorkerProcess], Any, redis.Redis]]:
    """Two workers with a short grace, on store and broker databases of their own."""
    stack = databases.stack(base_env, STEPSTREAM_SHUTDOWN_GRACE_S=str(GRACE_S))
    env = stack.env
    logs = tmp_path_factory.mktemp("shutdown")
    workers = {w.name: w for w in (start_worker(env, n, logs) for n in ("wa", "wb"))}
    app = app_factory(**stack.urls)
    client = stack.store()
    try:
        yield workers, app, client
    finally:
        for w in workers.values():
            w.stop()


def stop_holder(workers: dict[str, WorkerProcess], client: redis.Redis, run_id: str) -> Any:
    steps = keys.run_steps(run_id)
    holder = wait_for(
        lambda: client.hget(steps, "nap.status") == "running" and client.hget(steps, "nap.worker"),
        what="the nap step running",
    )
    stopping = workers[holder.split("@")[0]]
    stopping.proc.send_signal(signal.SIGTERM)  # the node's main process, as docker stop does
    return stopping


def test_a_step_outliving_the_grace_is_handed_back(pair: Any) -> None:
    workers, app, client = pair
    with serve(app) as server:
        run = submit(server.url, "test_takeover")  # its nap would take 60 s
        stopping = stop_holder(workers, client, run["run_id"])
        asked = time.monotonic()
        events, code = ws_events(server.ws_url, run["run_id"], timeout=60)
        stopping.proc.wait(timeout=30)
        assert time.monotonic() - asked < GRACE_S + 20  # not the 60 s of the step
    assert code == 1000
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    resumed = [e for e in events if e["type"] == "run_resumed"]
    assert [r["reason"] for r in resumed] == ["shutdown"]
    survivor = next(w for w in workers.values() if w is not stopping)
    assert resumed[0]["worker"].startswith(f"{survivor.name}@")
    started = [(e["step"], e["attempt"]) for e in events if e["type"] == "step_started"]
    assert started == [("first", 1), ("nap", 1), ("nap", 2), ("last", 1)]
    assert events[-1]["status"] == "succeeded"


def test_a_step_that_ends_within_the_grace_finishes_where_it_runs(pair: Any) -> None:
    workers, app, client = pair
    with serve(app) as server:
        run = submit(server.url, "test_short_nap")
        stopping = stop_holder(workers, client, run["run_id"])
        events, code = ws_events(server.ws_url, run["run_id"], timeout=60)
        stopping.proc.wait(timeout=30)
    assert code == 1000 and events[-1]["status"] == "succeeded"
    assert not [e for e in events if e["type"] == "run_resumed"]
    nap = next(e for e in events if e["type"] == "step_finished" and e["step"] == "nap")
    assert nap["status"] == "succeeded" and nap["attempt"] == 1
    # The step after it went to the worker still taking work.
    last_worker = client.hget(keys.run_steps(run["run_id"]), "last.worker")
    assert last_worker and not last_worker.startswith(f"{stopping.name}@")
