"""`POST /api/runs` and `POST /api/runs/batch` with an `Idempotency-Key`: claimed before
the runs are recorded, made final before they are sent, released when they are undone
(SPEC §6, §15). A batch's key stands for all of its runs: its claim names them all.

The claims themselves are the store's (`tasks/idempotency.py`); here they are tied to
the request, and runs that could not be sent are undone.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Sequence

from pydantic import BaseModel

from tasks.errors import BackendUnavailable, InvalidRequest
from tasks.statuses import RunStatus
from tasks.store import RunStore

from .roots import resend_owed
from .services import services

log = logging.getLogger(__name__)

IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,200}$")
#: How long a web process keeps trying to delete a run it answered 503 for.
UNDO_FOR_S = 600.0


def request_digest(req: BaseModel) -> str:
    """The same request whatever its whitespace or key order: a hash of the parsed body."""
    canonical = json.dumps(req.model_dump(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def check_idempotency_key(key: str) -> None:
    if not IDEMPOTENCY_KEY.fullmatch(key):
        raise InvalidRequest("Idempotency-Key must be 1-200 printable ASCII characters")


def claim_idempotency_key(key: str, run_id: str, req: BaseModel) -> str | None:
    """Claim `key` for this request; returns the earlier run id when it was claimed.
    For a batch, `run_id` and the answer name its runs (`batch_claim`, `batch_runs`).

    A claim is pending until its run is recorded and sent. One left pending longer
    than CLAIM_TIMEOUT_S (tasks/idempotency.py) was abandoned: if its run exists what
    it was owed is sent again and it is adopted, otherwise this request takes the key
    over.
    """
    check_idempotency_key(key)
    return services().store.idempotency.claim(
        key, request_digest(req), run_id, lambda orphan: resend_owed(batch_runs(orphan))
    )


def confirm_idempotency_key(key: str, run_id: str, req: BaseModel) -> str | None:
    """Make this request's claim final now that its run is recorded.

    Returns None when the key is ours, or the run of the request that took it over
    while this one was too slow (this run must then be undone, never sent).
    """
    return services().store.idempotency.confirm(key, request_digest(req), run_id)


def batch_claim(run_ids: Sequence[str]) -> str:
    """What a batch's claim names: its runs' ids, joined by commas."""
    return ",".join(run_ids)


def batch_runs(claim: str) -> list[str]:
    """The runs a claim names (one for a single run)."""
    return claim.split(",")


def undo_runs(run_ids: Sequence[str], idem: str | None) -> None:
    """Delete runs that were not sent, and release their Idempotency-Key if they hold it."""
    store = services().store
    try:
        for run_id in run_ids:
            store.forget_dispatches(run_id)
            store.delete_run(run_id)
    except BackendUnavailable:
        return  # Redis itself is away: a claim left pending is taken over in time.
    release_claim(run_ids, idem)


def release_claim(run_ids: Sequence[str], idem: str | None) -> None:
    """Release the Idempotency-Key `idem` (if any) that runs no longer existing hold."""
    if idem is None:
        return
    # Redis itself may be away: a claim left pending is taken over in time.
    with contextlib.suppress(BackendUnavailable):
        services().store.idempotency.release(idem, batch_claim(run_ids))


def undo_run(run_id: str, idem: str | None) -> None:
    """Delete a run that was not sent, and release its Idempotency-Key if it holds it."""
    undo_runs([run_id], idem)


def undo_later(store: RunStore, run_ids: Sequence[str]) -> None:
    """Delete, once Redis answers again, runs that may have been recorded before the
    request answered 503: its client was told nothing was created, and the sweeper
    would otherwise send their roots (they are owed). One that a worker started
    meanwhile is left to run: deleting it mid-run would be worse."""
    left = list(run_ids)

    def undo() -> None:
        deadline = time.monotonic() + UNDO_FOR_S
        while left:
            run_id = left[0]
            try:
                if store.status(run_id) == RunStatus.QUEUED:
                    store.forget_dispatches(run_id)
                    store.delete_run(run_id)
                    log.warning("run %s deleted: its request was answered 503", run_id)
                left.pop(0)
            except BackendUnavailable:
                if time.monotonic() > deadline:
                    for run_id in left:
                        log.error("run %s may have been recorded though answered 503", run_id)
                    return
                time.sleep(1.0)  # Redis is still away: try again in a moment

    threading.Thread(target=undo, name="stepstream-undo", daemon=True).start()
