"""What a worker records when Redis answers a write of an attempt's end with an error
(out of memory, read-only replica, busy script): a plain failure that names Redis'
error, "internal error recording the outcome: ResponseError: <Redis' text>", not the
store's `BackendUnavailable` that carries it.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any

import redis
from conftest import ONE_STEP

from tasks.config import Settings
from tasks.engine import Outcome
from tasks.redis_client import backend_errors
from tasks.store import RunStore
from worker.steps import end_attempt

OOM = "OOM command not allowed when used memory > 'maxmemory'."


def test_a_finish_answered_with_an_error_records_redis_error(
    settings: Settings, quiet_db: str
) -> None:
    store = RunStore.from_settings(replace(settings, redis_url=quiet_db))
    try:
        run_id = str(uuid.uuid4())
        store.create_run(run_id, ONE_STEP, {})
        (ready,) = store.start_run(run_id, "w@review").ready
        assert store.start_step(run_id, ready.step, ready.attempt, "w@review") is not None

        real = store.finish_step
        calls: list[tuple[Any, ...]] = []

        def finish_step(*args: Any, **kwargs: Any) -> Any:
            calls.append(args)
            if len(calls) == 1:
                with backend_errors:  # as the store raises what Redis answered
                    raise redis.ResponseError(OOM)
            return real(*args, **kwargs)

        store.finish_step = finish_step  # type: ignore[method-assign,assignment]
        end_attempt(store, run_id, ready.step, ready.attempt, Outcome("succeeded", "", '{"x":1}'))

        finished = [
            e.to_dict() for e in store.read_events(run_id, "0", 100) if e.type == "step_finished"
        ]
        assert len(finished) == 1
        assert finished[0]["status"] == "failed"
        # As before the split: the error Redis answered, not the project's wrapper.
        assert finished[0]["message"] == (
            f"internal error recording the outcome: ResponseError: {OOM}"
        )
    finally:
        store.close()
