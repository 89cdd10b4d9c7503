"""A run's steps spread over two worker processes and still complete correctly."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from clients import submit, ws_events
from conftest import LiveServer, WorkerProcess, start_worker

from tasks import keys


@pytest.fixture
def second_worker(
    base_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory, worker: WorkerProcess
) -> Iterator[WorkerProcess]:
    w = start_worker(base_env, "w2", tmp_path_factory.mktemp("logs2"))
    yield w
    w.stop()


@pytest.mark.slow
def test_steps_of_one_run_execute_on_both_workers(
    live_server: LiveServer, second_worker: WorkerProcess, r: redis.Redis
) -> None:
    run = submit(live_server.url, "test_wide")
    events, code = ws_events(live_server.ws_url, run["run_id"])
    assert code == 1000 and events[-1]["status"] == "succeeded"
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    names = ["root"] + [f"b{i}" for i in range(1, 9)] + ["join"]
    ran_on = r.hmget(keys.run_steps(run["run_id"]), [f"{n}.worker" for n in names])
    assert all(ran_on)
    hosts = {w.split("@")[0] for w in ran_on if w}
    # Eight 0.3 s branches and two slots per worker: both workers must take some.
    assert hosts == {"w1", "w2"}
    # Every step started exactly once.
    started = [e["step"] for e in events if e["type"] == "step_started"]
    assert sorted(started) == sorted(names)
