"""Every Redis key stepstream uses, built in one place.

A run's keys share the hash tag `{<run_id>}` so that they live in one Redis Cluster
slot and the Lua scripts that touch them stay legal there.
"""

from __future__ import annotations

PREFIX = "stepstream"


def run(run_id: str) -> str:
    """Hash: the run's fields (status, input, timestamps, seq, last_event_id ...)."""
    return f"{PREFIX}:run:{{{run_id}}}"


def run_steps(run_id: str) -> str:
    """Hash: per step, its state as JSON, its definition and its output."""
    return f"{PREFIX}:run:{{{run_id}}}:steps"


def run_events(run_id: str) -> str:
    """Stream: the run's events, one field `data` holding the event JSON."""
    return f"{PREFIX}:run:{{{run_id}}}:events"


def run_keys(run_id: str) -> list[str]:
    """The keys every run script receives, in the order the scripts expect."""
    return [run(run_id), run_steps(run_id), run_events(run_id)]


def all_events() -> str:
    """Stream: events of every run, best effort, for dashboards."""
    return f"{PREFIX}:events"


def runs_index() -> str:
    """Sorted set: run ids scored by creation time in microseconds."""
    return f"{PREFIX}:runs"


def runs_by_status(status: str) -> str:
    """Sorted set: the ids of runs in `status`, scored like `runs_index`."""
    return f"{PREFIX}:runs:status:{status}"


def runs_by_scenario(scenario_id: str, status: str | None = None) -> str:
    """Sorted set: the ids of runs of a scenario (in `status`), scored like `runs_index`."""
    key = f"{PREFIX}:runs:scenario:{scenario_id}"
    return key if status is None else f"{key}:status:{status}"


def run_ids() -> str:
    """Sorted set, every score 0: the ids of indexed runs, in lexical order (searched by
    prefix; kept by `tasks/id_index.py`)."""
    return f"{PREFIX}:runs:ids"


def run_ids_synced() -> str:
    """String: the creation-time score up to which `run_ids` holds every run."""
    return f"{PREFIX}:runs:ids:synced"


def scenario_of() -> str:
    """Hash: run id -> scenario id, to drop an expired run from the scenario indexes."""
    return f"{PREFIX}:runs:scenario_of"


def running_attempts() -> str:
    """Sorted set: running attempts, each `run, step, attempt, started (ms), incarnation,
    worker` separated by tabs, scored by the Redis time (ms) by which it must end."""
    return f"{PREFIX}:attempts:running"


def owed_dispatches() -> str:
    """Sorted set: queued runs (`run`) and ready steps (`run, step` separated by a tab)
    scored by the Redis time (ms) at which they are sent again if nothing started them."""
    return f"{PREFIX}:attempts:dispatch"


def legacy_active_runs() -> str:
    """Set: unfinished runs, as versions before the watch indexes kept them (and nodes of
    such a version still do during a rolling upgrade)."""
    return f"{PREFIX}:active"


def indexes_version() -> str:
    """String: set once every run is in the listing and watch indexes."""
    return f"{PREFIX}:indexes:version"


def sweeper_lock() -> str:
    """String: held by the one worker sweeping for lost runs right now."""
    return f"{PREFIX}:sweeper"


def workers() -> str:
    """Hash: worker name -> heartbeat JSON."""
    return f"{PREFIX}:workers"


def idempotency(key: str) -> str:
    return f"{PREFIX}:idem:{key}"
