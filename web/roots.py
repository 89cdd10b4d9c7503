"""Sending the root steps of the runs the web creates.

A run has no task of its own: create_run.lua records it with its roots ready (each an
owed dispatch in the watch index), and the web sends their `run_step` tasks right after,
all of a request's runs through one producer (`worker.publish`). Should the web die
between the two, the sweeper sends the roots once `STEPSTREAM_REDELIVER_S` has passed;
should the broker refuse them, the request answers 503 and its runs are undone.
"""

from __future__ import annotations

from collections.abc import Sequence

from tasks.redis_client import backend_errors
from tasks.store import CreatedRun
from tasks.task_names import RUN_SCENARIO
from worker.publish import publish_steps

from .services import services


def send_roots(runs: Sequence[CreatedRun]) -> None:
    """Publish the roots of runs just created, in one producer batch; a broker that
    fails it raises `BackendUnavailable` (`BackendUnreachable` when it did not answer)."""
    sends = [
        (run.summary["run_id"], run.summary["scenario_id"], item)
        for run in runs
        for item in run.ready
    ]
    if sends:
        with backend_errors:
            publish_steps(services().celery, sends)


def resend_owed(run_ids: Sequence[str]) -> None:
    """Send again what the creator of queued runs owed and may never have sent (its
    request died after recording them): their roots, or for a run created by an earlier
    version, its `run_scenario` task. Runs started or gone need nothing."""
    svc = services()
    sends = []
    for run_id in run_ids:
        status, scenario_id, ready = svc.store.queued_roots(run_id)
        if status == "queued" and not ready:
            svc.send_task(RUN_SCENARIO, [run_id])
        sends += [(run_id, scenario_id, item) for item in ready]
    if sends:
        with backend_errors:
            publish_steps(svc.celery, sends)
