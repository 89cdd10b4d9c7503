"""Review: a step's execution token must tell two executions of one attempt apart,
whatever the tools of a worker process did to Python's global `random` generator."""

from __future__ import annotations

import os
import random
import uuid
from pathlib import Path

import pytest
from conftest import wait_for
from stacks import Stack

from tasks.config import Settings
from tasks.scenario import parse_scenario
from tasks.store import RunStore


def _execute_in_a_child(env: dict[str, str], run_id: str, seed: int) -> int:
    """Run `run_step` for attempt 1 of step `x` in a forked child, as a prefork pool
    child runs a message, after a tool run earlier in that child seeded the global
    `random` generator (`random.seed(seed)`: simulations, sampling, test data...)."""
    pid = os.fork()
    if pid == 0:  # the child
        code = 0
        try:
            os.environ.update(env)
            import tasks.runtime

            tasks.runtime._build.cache_clear()  # the child's own runtime, as after a fork
            from worker.steps import run_step

            random.seed(seed)  # left behind by an earlier tool in this child
            run_step(run_id, "x", 1)
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    return pid


@pytest.mark.slow
def test_a_redelivered_copy_never_runs_beside_the_execution_holding_its_attempt(
    isolated_stack: Stack, tmp_path: Path
) -> None:
    settings = Settings.from_env(isolated_stack.env)
    store = RunStore.from_settings(settings)
    journal_dir = tmp_path / "journal"
    journal_dir.mkdir()
    scenario = parse_scenario(
        {
            "schema_version": "1",
            "scenario_id": "tokens",
            "name": "Tokens",
            "steps": [
                {
                    "name": "x",
                    "tool": "journal",
                    "input": {"dir": str(journal_dir), "seconds": 2.0, "ticks": 2},
                }
            ],
        },
        {"journal"},
    )
    run_id = str(uuid.uuid4())
    store.create_run(run_id, scenario, {})

    first = _execute_in_a_child(isolated_stack.env, run_id, seed=42)

    def running() -> bool:
        snap = store.snapshot(run_id)
        return snap is not None and snap["steps"][0]["status"] == "running"

    wait_for(running, what="the first execution to hold attempt 1")
    # The same message again (a broker reconnect restores unacknowledged messages) in
    # another pool child whose tools seeded `random` the same way.
    second = _execute_in_a_child(isolated_stack.env, run_id, seed=42)
    for pid in (first, second):
        os.waitpid(pid, 0)

    executions = (journal_dir / "journal").read_text().splitlines()
    assert len(executions) == 1, f"attempt 1 was executed {len(executions)} times: {executions}"
