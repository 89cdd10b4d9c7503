"""Review: the all-runs stream is best effort (SPEC §5): a copy that Redis refuses must
not stop a run, nor leave its state disagreeing with its stream."""

from __future__ import annotations

import redis
from conftest import ONE_STEP

from tasks import keys
from tasks.config import Settings
from tasks.errors import BackendUnavailable
from tasks.store import RunStore


def test_a_refused_all_runs_copy_neither_stops_a_run_nor_splits_state_from_stream(
    settings: Settings, r: redis.Redis
) -> None:
    store = RunStore.from_settings(settings)
    run_id = "all-runs-refused"
    store.create_run(run_id, ONE_STEP, {})
    # The shared key is not a stream (another tool's key of that name, a hand-made
    # mistake): the copy's XADD is refused with WRONGTYPE.
    r.set(keys.all_events(), "not a stream")

    try:
        start = store.start_step(run_id, "only", 1, "w@review", "", "token", "", input_json="{}")
    except BackendUnavailable as exc:
        start = None
        refused = str(exc)
    else:
        refused = ""

    snapshot = store.snapshot(run_id)
    assert snapshot is not None
    stream = r.xrange(keys.run_events(run_id))
    # SPEC §5: the run's stored state and its stream never disagree.
    assert snapshot["last_event_id"] == stream[-1][0], (
        f"snapshot at {snapshot['last_event_id']} (status {snapshot['status']}, seq "
        f"{r.hget(keys.run(run_id), 'seq')}) but the stream ends with "
        f"{[f['data'][:60] for _, f in stream]}"
    )
    # And a best-effort copy does not decide whether a step runs.
    assert start is not None, f"the step could not start: {refused}"
