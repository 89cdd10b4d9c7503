"""Graceful shutdown (SPEC §8): on SIGTERM a worker takes no new work (Celery's warm
shutdown), lets running steps finish for `STEPSTREAM_SHUTDOWN_GRACE_S`, and then hands
the rest back: each attempt it still holds becomes the next attempt, taken by another
worker (`run_resumed`, reason `shutdown`), and the worker ends itself with Celery's cold
shutdown. On SIGQUIT (cold shutdown: a second Ctrl-C) it hands back at once.

Cold shutdown, not SIGKILL of the pool's processes: Celery cancels them knowing it is
terminating, so a shutdown leaves no `WorkerLostError` traceback in the log; what the
processes still write is fenced out, their attempts belonging to others by then.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from celery.signals import worker_shutting_down

from tasks.config import Settings
from tasks.runtime import get_runtime
from tasks.statuses import Reason
from tasks.store import RunStore

from .sweeper import take_over

log = logging.getLogger(__name__)

#: How long a cold shutdown waits for the hand-back to be written.
HAND_BACK_TIMEOUT_S = 5.0
#: How often the wait is logged.
LOG_EVERY_S = 5.0

#: Told each second of the grace how many steps still run and how long is left; `make
#: up` sets it to draw its countdown.
on_wait: Callable[[int, float], None] | None = None


def hand_back(store: RunStore, hostname: str) -> int:
    """Resume elsewhere every attempt `hostname` still runs; returns how many."""
    return take_over(store, Reason.SHUTDOWN, lambda attempt: attempt.worker == hostname)


def _running() -> int:
    from celery.worker import state

    return len(state.active_requests)


def _hand_back(hostname: str, when: str) -> None:
    try:
        handed = hand_back(get_runtime().store, hostname)
    except Exception:
        log.exception("%s: handing running steps back failed", hostname)
        return
    if handed:
        steps = "step" if handed == 1 else "steps"
        log.warning("%s: handed %d running %s back %s", hostname, handed, steps, when)


def _after_grace(hostname: str, grace_s: float) -> None:
    # The grace is a deadline: steps that finish in it are not touched.
    deadline = time.monotonic() + grace_s
    logged = 0.0
    while (running := _running()) and (left := deadline - time.monotonic()) > 0:
        if on_wait is not None:
            on_wait(running, left)
        if time.monotonic() - logged >= LOG_EVERY_S:
            logged = time.monotonic()
            steps = "step" if running == 1 else "steps"
            log.info("stopping: waiting for %d running %s (%.0f s)", running, steps, left)
        time.sleep(min(1.0, left))  # a countdown ticks by the clock
    if not _running():
        return  # Celery finishes the warm shutdown on its own
    _hand_back(hostname, f"after {grace_s:g} s")
    os.kill(os.getpid(), signal.SIGQUIT)


@worker_shutting_down.connect
def _on_shutting_down(sender: str, how: str = "Warm", **_: Any) -> None:
    if how == "Warm":
        # The settings alone, not the runtime: building that (tools, MCP servers) in a
        # signal handler would hold the countdown back by seconds.
        grace = Settings.from_env().shutdown_grace_s
        # Runs from Celery's signal handler: do the waiting on a thread of its own.
        threading.Thread(target=_after_grace, args=(sender, grace), daemon=True).start()
        return
    # Cold: hand back now, on a thread, so that a lock the interrupted code holds is no
    # trap, and for a bounded time.
    thread = threading.Thread(target=_hand_back, args=(sender, "at once"), daemon=True)
    thread.start()
    thread.join(HAND_BACK_TIMEOUT_S)
