"""The Celery worker ``make up`` runs: ``celery -A worker worker``, quieter, and with a
shutdown that says what it waits for and ends without a traceback.

Run as ``python -m devtools.up_worker [--name N] [--concurrency C] [--verbose]``.

What differs from the plain command, and why:

- Celery's banner and its INFO chatter (connections, mingle, each task received) stay
  out of the terminal; warnings and errors, ours and Celery's, still reach it.
- On SIGTERM (warm shutdown) the worker prints a status line every second,
  ``stopping: waiting for 1 running step (28 s)…``, which ``make up`` shows as its
  countdown (``worker.shutdown.on_wait``). The rest is the worker's own shutdown
  (``worker/shutdown.py``): at the end of the grace the steps still running are handed
  back and the worker ends with Celery's cold shutdown, and on SIGQUIT (``make up``'s
  second Ctrl-C, or a reload) they are handed back at once.
"""

from __future__ import annotations

import argparse
import logging
import sys
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


def _countdown(running: int, left_s: float) -> None:
    status(waiting_text(running, left_s))


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


def _show_countdown() -> None:
    from worker import shutdown

    shutdown.on_wait = _countdown


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.up_worker")
    parser.add_argument("--name", default="worker1@%h", help="the node name (default: %(default)s)")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--verbose", action="store_true", help="Celery's banner and INFO logs")
    args = parser.parse_args(argv)

    from worker import app

    _quiet_celery(args.verbose)
    _show_countdown()
    command = [] if args.verbose else ["--quiet"]
    command += [
        "worker", f"--loglevel={'INFO' if args.verbose else 'WARNING'}",
        f"--concurrency={args.concurrency}", "-n", args.name,
    ]  # fmt: skip
    code = app.start(command)
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
