"""Graceful shutdown (SPEC §8): on SIGTERM a worker takes no new work (Celery's warm
shutdown), lets running steps finish for `STEPSTREAM_SHUTDOWN_GRACE_S`, and then hands
the rest back: each attempt it still holds becomes the next attempt, taken by another
worker (`run_resumed`, reason `shutdown`), and the pool processes that ran them are
stopped so the worker can exit.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from typing import Any

from celery.signals import worker_ready, worker_shutting_down

from tasks.runtime import get_runtime
from tasks.statuses import Reason
from tasks.store import RunStore

from .sweeper import take_over

log = logging.getLogger(__name__)

#: The worker's consumer, remembered at start: it knows the pool's processes.
_consumer: Any = None


def hand_back(store: RunStore, hostname: str) -> int:
    """Resume elsewhere every attempt `hostname` still runs; returns how many."""
    return take_over(store, Reason.SHUTDOWN, lambda attempt: attempt.worker == hostname)


def _after_grace(hostname: str, grace_s: float) -> None:
    time.sleep(grace_s)  # the grace is a deadline: steps that finish in it are not touched
    handed = hand_back(get_runtime().store, hostname)
    if not handed:
        return
    log.warning("%s: handed %d running step(s) back after %g s", hostname, handed, grace_s)
    pool = getattr(_consumer, "pool", None)
    for pid in (getattr(pool, "info", None) or {}).get("processes", []):
        # Their attempts belong to others now; what they still write is fenced out.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@worker_ready.connect
def _remember(sender: Any, **_: Any) -> None:
    global _consumer
    _consumer = sender


@worker_shutting_down.connect
def _on_shutting_down(sender: str, how: str = "Warm", **_: Any) -> None:
    if how != "Warm":
        return
    grace = get_runtime().settings.shutdown_grace_s
    # Runs from Celery's signal handler: do the waiting on a thread of its own.
    threading.Thread(target=_after_grace, args=(sender, grace), daemon=True).start()
