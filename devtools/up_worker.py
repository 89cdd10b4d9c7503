"""The Celery worker ``make up`` runs: ``celery -A worker worker``, quieter, and with a
shutdown that says what it waits for and ends without a traceback.

Run as ``python -m devtools.up_worker [--name N] [--concurrency C] [--verbose]``.

What differs from the plain command, and why:

- Celery's banner and its INFO chatter (connections, mingle, each task received) stay
  out of the terminal; warnings and errors, ours and Celery's, still reach it.
- On SIGTERM (warm shutdown) the worker prints a status line every second,
  ``stopping: waiting for 1 running step (28 s)…``, which ``make up`` shows as its
  countdown. When the grace (``STEPSTREAM_SHUTDOWN_GRACE_S``) runs out, the steps still
  running are handed back (``worker.shutdown.hand_back``) and the worker ends itself
  with Celery's cold shutdown. The stock path SIGKILLs the pool's processes instead,
  which Celery reports as a ``WorkerLostError`` traceback; a cold shutdown cancels them
  and Celery, knowing it is terminating, reports nothing.
- On SIGQUIT (cold shutdown: ``make up``'s second Ctrl-C, or a reload) the running
  steps are handed back at once.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Sequence
from typing import Any

#: Lines starting with this are the worker's shutdown status, which ``make up`` shows
#: as one line it updates rather than as the worker's output.
STATUS_PREFIX = "@@stepstream-status "
#: Loggers that say how Celery is doing, not how steps are: kept at WARNING.
CHATTY_LOGGERS = ("celery", "kombu", "billiard", "amqp")
#: What Celery says on the console about its own signals ("worker: Warm shutdown",
#: "Hitting Ctrl+C again will terminate all running tasks!"): meant for a worker in a
#: terminal of its own, and wrong under make up, whose Ctrl-C is the supervisor's.
SIGNAL_HINTS = ("worker: ", "Waiting gracefully")
#: How long the cold shutdown waits for the hand-back to be written.
HAND_BACK_TIMEOUT_S = 5.0

log = logging.getLogger("devtools.up_worker")


def status(text: str) -> None:
    """Print one shutdown status line for ``make up``."""
    # The real stdout: Celery sends sys.stdout to its logger.
    out = sys.__stdout__
    if out is not None:
        out.write(f"{STATUS_PREFIX}{text}\n")
        out.flush()


def waiting_text(running: int, left_s: float) -> str:
    steps = "step" if running == 1 else "steps"
    return f"stopping: waiting for {running} running {steps} ({max(left_s, 0):.0f} s)…"


def _running() -> int:
    from celery.worker import state

    return len(state.active_requests)


def _hand_back(hostname: str) -> int:
    from tasks.runtime import get_runtime
    from worker.shutdown import hand_back

    try:
        return hand_back(get_runtime().store, hostname)
    except Exception:
        log.exception("%s: handing running steps back failed", hostname)
        return 0


def _say_handed(handed: int, when: str) -> None:
    if handed:
        steps = "step" if handed == 1 else "steps"
        log.warning("handed %d running %s back %s; they resume on the next worker", handed,
                    steps, when)  # fmt: skip


def _count_down(hostname: str, grace_s: float) -> None:
    """Warm shutdown: report the wait each second; at the deadline, hand back and stop."""
    deadline = time.monotonic() + grace_s
    while True:
        running = _running()
        if running == 0:
            return  # Celery finishes the shutdown on its own
        left = deadline - time.monotonic()
        if left <= 0:
            break
        status(waiting_text(running, left))
        time.sleep(min(1.0, left))  # a countdown ticks by the clock
    _say_handed(_hand_back(hostname), f"after {grace_s:g} s")
    # Celery's cold shutdown cancels what still runs, knowing it is terminating.
    os.kill(os.getpid(), signal.SIGQUIT)


def _on_shutting_down(sender: str, how: str = "Warm", **_: Any) -> None:
    from tasks.config import Settings

    if how == "Warm":
        # Not the runtime's settings: building the runtime (tools, MCP servers) in a
        # signal handler would hold the countdown back by seconds.
        grace = Settings.from_env().shutdown_grace_s
        # Called from Celery's signal handler: the waiting happens on a thread.
        threading.Thread(target=_count_down, args=(sender, grace), daemon=True).start()
        return
    # Cold: hand back now, on a thread, so a lock the interrupted code holds is no trap.
    handed: list[int] = []
    thread = threading.Thread(target=lambda: handed.append(_hand_back(sender)), daemon=True)
    thread.start()
    thread.join(HAND_BACK_TIMEOUT_S)
    _say_handed(sum(handed), "at once")


def _quiet_celery(verbose: bool) -> None:
    import celery.apps.worker
    from celery.exceptions import SecurityWarning
    from celery.signals import after_setup_logger

    # make up is a local tool: whoever runs it may be root, as in a container.
    warnings.filterwarnings("ignore", category=SecurityWarning)
    if verbose:
        return
    say = celery.apps.worker.safe_say

    def say_less(msg: str, f: Any = sys.__stderr__) -> None:
        if not msg.startswith(SIGNAL_HINTS):
            say(msg, f)

    # The module's own name is what its signal handlers call.
    celery.apps.worker.safe_say = say_less

    def levels(**_: Any) -> None:
        for name in CHATTY_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)

    after_setup_logger.connect(levels, weak=False)


def _replace_shutdown_handler() -> None:
    from celery.signals import worker_shutting_down

    from worker import shutdown

    worker_shutting_down.disconnect(shutdown._on_shutting_down)
    worker_shutting_down.connect(_on_shutting_down, weak=False)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.up_worker")
    parser.add_argument("--name", default="worker1@%h", help="the node name (default: %(default)s)")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--verbose", action="store_true", help="Celery's banner and INFO logs")
    args = parser.parse_args(argv)

    from worker import app

    _quiet_celery(args.verbose)
    _replace_shutdown_handler()
    command = [] if args.verbose else ["--quiet"]
    command += [
        "worker", f"--loglevel={'INFO' if args.verbose else 'WARNING'}",
        f"--concurrency={args.concurrency}", "-n", args.name,
    ]  # fmt: skip
    code = app.start(command)
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
