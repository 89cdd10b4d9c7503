"""Chaos: fifty runs go on while their workers are killed with SIGKILL, again and again.

Every run must end `succeeded`, no step attempt may execute twice (each execution
writes a line to a journal as it starts), and each run's stream must have gap-free
`seq` and exactly one `run_finished`. The kills follow a seeded schedule; the pauses
between them are the chaos being injected, not waits for results.
"""

from __future__ import annotations

import collections
import os
import random
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from clients import submit
from conftest import LiveServer, WorkerProcess, serve, start_worker, wait_for
from stacks import Databases

from devtools.processes import child_pids
from tasks import keys
from tasks.config import Settings
from tasks.store import RunStore

#: Minutes of real processes and faults: left out of `make test-fast`.
pytestmark = pytest.mark.slow

RUNS = 50
SEED = 20261123
NODES = ("c1", "c2", "c3")
#: How long all runs may take, kills included.
FINISH_TIMEOUT_S = 240


@dataclass
class Cluster:
    env: dict[str, str]
    workers: dict[str, WorkerProcess]
    web: LiveServer
    store: RunStore
    #: A client of the cluster's store database, to look at what the store keeps.
    db: redis.Redis
    logs: Path
    journal_dir: Path

    def restart(self, name: str) -> None:
        self.workers[name] = start_worker(self.env, name, self.logs)


@pytest.fixture
def cluster(
    databases: Databases,
    base_env: dict[str, str],
    app_factory: Callable[..., Any],
    tmp_path: Path,
) -> Iterator[Cluster]:
    """Three worker nodes on store and broker databases of their own, with a fast
    heartbeat so that lost nodes are noticed within seconds."""
    stack = databases.stack(
        base_env,
        STEPSTREAM_HEARTBEAT_S="0.5",
        # The limit on takeovers is tested elsewhere; here every run must get through.
        STEPSTREAM_MAX_RESUMES="50",
        STEPSTREAM_REDELIVER_S="4",
    )
    env = stack.env
    logs = tmp_path / "logs"
    logs.mkdir()
    journal_dir = tmp_path / "journal"
    journal_dir.mkdir()
    workers = {name: start_worker(env, name, logs) for name in NODES}
    app = app_factory(**stack.urls)
    store = RunStore.from_settings(Settings.from_env(env))
    db = stack.store()
    try:
        with serve(app) as web:
            yield Cluster(env, workers, web, store, db, logs, journal_dir)
    finally:
        for w in workers.values():
            w.stop()
        store.close()
        db.close()


def submit_runs(cluster: Cluster, count: int = RUNS) -> list[str]:
    return [
        submit(cluster.web.url, "test_chaos", {"dir": str(cluster.journal_dir)})["run_id"]
        for _ in range(count)
    ]


def unfinished(cluster: Cluster, run_ids: list[str]) -> list[str]:
    pipe = cluster.db.pipeline(transaction=False)
    for run_id in run_ids:
        pipe.hget(keys.run(run_id), "status")
    statuses = pipe.execute()
    return [
        r
        for r, s in zip(run_ids, statuses, strict=True)
        if s not in ("succeeded", "failed", "cancelled")
    ]


def check_runs(cluster: Cluster, run_ids: list[str]) -> int:
    """Assert every guarantee; returns how many takeovers happened."""
    executions = collections.Counter(
        tuple(line.split()[:3])
        for line in (cluster.journal_dir / "journal").read_text().splitlines()
    )
    twice = [key for key, n in executions.items() if n > 1]
    assert not twice, f"attempts executed more than once: {twice}"
    resumes = 0
    for run_id in run_ids:
        events = [e.to_dict() for e in cluster.store.read_events(run_id, "0", 10_000)]
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1)), run_id
        types = [e["type"] for e in events]
        assert types.count("run_finished") == 1 and types[-1] == "run_finished", run_id
        assert events[-1]["status"] == "succeeded", events[-1]
        finished = [e["step"] for e in events if e["type"] == "step_finished"]
        assert sorted(finished) == ["a", "b", "c", "d"], (run_id, finished)
        started = [(e["step"], e["attempt"]) for e in events if e["type"] == "step_started"]
        assert len(started) == len(set(started)), (run_id, started)
        # Each step's result came from the one execution of the attempt that ended it.
        ended = {e["step"]: e["attempt"] for e in events if e["type"] == "step_finished"}
        for step, attempt in ended.items():
            assert executions[(run_id, step, str(attempt))] == 1, (run_id, step, attempt, events)
        # An attempt whose process was killed between its start and its tool's first line
        # ran nothing (and was taken over); none ran twice (checked above).
        for step, attempt in started:
            assert executions[(run_id, step, str(attempt))] <= 1, (run_id, step, attempt)
        resumes += types.count("run_resumed")
    return resumes


def test_killed_pool_processes_lose_no_run(cluster: Cluster) -> None:
    rng = random.Random(SEED)
    run_ids = submit_runs(cluster)
    kills = 0
    deadline = time.monotonic() + FINISH_TIMEOUT_S
    while kills < 8 and unfinished(cluster, run_ids):
        time.sleep(rng.uniform(0.3, 0.8))  # the chaos schedule
        node = cluster.workers[rng.choice(NODES)]
        children = child_pids(node.proc.pid)
        if children:
            os.kill(rng.choice(children), signal.SIGKILL)
            kills += 1
    wait_for(
        lambda: not unfinished(cluster, run_ids),
        timeout=max(1.0, deadline - time.monotonic()),
        what="every run to finish",
    )
    assert kills == 8
    resumes = check_runs(cluster, run_ids)
    assert resumes >= 1  # kills did land mid-step


def test_killed_worker_nodes_lose_no_run(cluster: Cluster) -> None:
    rng = random.Random(SEED + 1)
    # Twice the runs: each kill waits for its node to come back (seconds on a busy
    # machine), and the schedule must end before the work does, or fewer kills land.
    run_ids = submit_runs(cluster, 2 * RUNS)
    kills = 0
    deadline = time.monotonic() + FINISH_TIMEOUT_S
    while kills < 4 and unfinished(cluster, run_ids):
        time.sleep(rng.uniform(0.5, 1.5))  # the chaos schedule
        name = rng.choice(NODES)
        doomed = cluster.workers[name]
        os.killpg(doomed.proc.pid, signal.SIGKILL)  # the whole node, no goodbye
        doomed.proc.wait(timeout=10)
        kills += 1
        # It comes back under the same name, as a restarted container would.
        cluster.restart(name)
    wait_for(
        lambda: not unfinished(cluster, run_ids),
        timeout=max(1.0, deadline - time.monotonic()),
        what="every run to finish",
    )
    assert kills == 4
    resumes = check_runs(cluster, run_ids)
    assert resumes >= 1
