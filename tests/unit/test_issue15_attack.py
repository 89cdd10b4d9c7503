"""The worker registry under a bad day: a worker whose clock disagrees with Redis'."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from types import SimpleNamespace

from tasks.task_names import RUN_STEP
from tasks.workers import read_registry
from worker.heartbeat import current_steps

#: Redis' clock when the row was read, and the worker's, an hour ahead of it.
NOW = 1_800_000_000.0
SKEW_S = 3600.0


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat()


def test_a_current_step_started_at_is_on_redis_clock_whatever_the_worker_clock() -> None:
    # The worker took the step 5 s before it beat, by its own clock an hour ahead.
    request = SimpleNamespace(name=RUN_STEP, args=("r1", "s", 1), time_start=time.time() - 5)
    [step] = current_steps([request])
    assert 4.5 <= step["running_s"] <= 6
    row = {
        "last_heartbeat": NOW - 1,  # stamped by Redis as it wrote the row
        "current_steps": [{**step, "started_at": iso(NOW - 1 - 5 + SKEW_S), "running_s": 5.0}],
    }
    workers = read_registry({"w@h": json.dumps(row)}, now=NOW, heartbeat_s=10).workers
    [listed] = workers[0]["current_steps"]
    assert listed == {"run_id": "r1", "step": "s", "attempt": 1, "started_at": iso(NOW - 6)}


def test_a_row_without_running_s_or_with_a_nonsense_one_keeps_its_started_at() -> None:
    started = iso(NOW - 30)
    steps = [
        {"run_id": "r1", "step": "a", "attempt": 1, "started_at": started},
        {"run_id": "r2", "step": "b", "attempt": 1, "started_at": started, "running_s": -1},
        {"run_id": "r3", "step": "c", "attempt": 1, "started_at": started, "running_s": "x"},
        {"run_id": "r4", "step": "d", "attempt": 1, "started_at": started, "running_s": 1e300},
    ]
    row = json.dumps({"last_heartbeat": NOW, "current_steps": steps})
    [worker] = read_registry({"w@h": row}, now=NOW, heartbeat_s=10).workers
    assert [s["started_at"] for s in worker["current_steps"]] == [started] * 4
