"""`POST /api/runs` with an `Idempotency-Key`: claimed before the run is recorded, made
final before it is sent, released when the run is undone (SPEC §6).

The claims themselves are the store's (`tasks/idempotency.py`); here they are tied to
the request, and runs that could not be sent are undone.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
from typing import TYPE_CHECKING

from tasks.errors import BackendUnavailable, InvalidRequest
from tasks.statuses import RunStatus
from tasks.store import RunStore
from tasks.task_names import RUN_SCENARIO

from .services import services

if TYPE_CHECKING:
    from .api import RunRequest

log = logging.getLogger(__name__)

IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,200}$")
#: How long a web process keeps trying to delete a run it answered 503 for.
UNDO_FOR_S = 600.0


def request_digest(req: RunRequest) -> str:
    """The same request whatever its whitespace or key order: a hash of the parsed body."""
    canonical = json.dumps(req.model_dump(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def claim_idempotency_key(key: str, run_id: str, req: RunRequest) -> str | None:
    """Claim `key` for this request; returns the earlier run id when it was claimed.

    A claim is pending until its run is recorded and sent. One left pending longer
    than CLAIM_TIMEOUT_S (tasks/idempotency.py) was abandoned: if its run exists it is
    sent again and adopted, otherwise this request takes the key over.
    """
    if not IDEMPOTENCY_KEY.fullmatch(key):
        raise InvalidRequest("Idempotency-Key must be 1-200 printable ASCII characters")
    svc = services()

    def resend(orphan: str) -> None:
        svc.send_task(RUN_SCENARIO, [orphan])

    return svc.store.idempotency.claim(key, request_digest(req), run_id, resend)


def confirm_idempotency_key(key: str, run_id: str, req: RunRequest) -> str | None:
    """Make this request's claim final now that its run is recorded.

    Returns None when the key is ours, or the run of the request that took it over
    while this one was too slow (this run must then be undone, never sent).
    """
    return services().store.idempotency.confirm(key, request_digest(req), run_id)


def undo_run(run_id: str, idem: str | None) -> None:
    """Delete a run that was not sent, and release its Idempotency-Key if it holds it."""
    store = services().store
    try:
        store.delete_run(run_id)
        if idem is not None:
            store.idempotency.release(idem, run_id)
    except BackendUnavailable:
        pass  # Redis itself is away: a claim left pending is taken over in time.


def undo_later(store: RunStore, run_id: str) -> None:
    """Delete, once Redis answers again, a run that may have been recorded before the
    request answered 503: its client was told nothing was created, and the sweeper
    would otherwise start it (its start is owed). One that a worker started meanwhile is
    left to run: deleting it mid-run would be worse."""

    def undo() -> None:
        deadline = time.monotonic() + UNDO_FOR_S
        while True:
            try:
                if store.status(run_id) == RunStatus.QUEUED:
                    store.delete_run(run_id)
                    log.warning("run %s deleted: its request was answered 503", run_id)
                return
            except BackendUnavailable:
                if time.monotonic() > deadline:
                    log.error("run %s may have been recorded though answered 503", run_id)
                    return
                time.sleep(1.0)  # Redis is still away: try again in a moment

    threading.Thread(target=undo, name="stepstream-undo", daemon=True).start()
