"""Child processes of the suite and the benchmarks: start one with its output in a log
file, wait until it is ready, find its children."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: A new process must be ready within this many seconds.
START_TIMEOUT_S = 30.0
#: Signals a child gets with their default action whatever its parent does with them:
#: an ignored signal stays ignored across exec, and a parent started under `nohup`
#: (SIGHUP) or as a background job of a script (SIGINT, SIGQUIT) ignores some.
DEFAULT_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT, signal.SIGHUP)


def default_signals() -> None:
    """Reset `DEFAULT_SIGNALS` to SIG_DFL: Popen's `preexec_fn` for every child that a
    test or a tool signals, so that it reacts as it would started from a terminal."""
    for signum in DEFAULT_SIGNALS:
        signal.signal(signum, signal.SIG_DFL)


def spawn(command: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start `command` from the repository root, in a session of its own (so that its
    whole group can be signalled), with default signal dispositions, `env` over ours
    and its output in `log_path`."""
    return subprocess.Popen(
        command,
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=default_signals,
    )


def wait_ready(
    proc: subprocess.Popen[bytes],
    ready: Callable[[], bool],
    *,
    what: str,
    log_path: Path,
    give_up: Callable[[], None],
    timeout: float = START_TIMEOUT_S,
) -> None:
    """Poll `ready` until it holds; raise with the log if the process exits first or
    `timeout` passes (after calling `give_up` to stop it)."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            raise RuntimeError(f"{what}: the process exited:\n{log_path.read_text()}")
        if time.monotonic() > deadline:
            give_up()
            raise RuntimeError(f"{what}: not ready within {timeout:g} s:\n{log_path.read_text()}")
        time.sleep(0.05)  # polling for the process to come up


def child_pids(pid: int) -> list[int]:
    """The pids of a process's children (Linux), [] once it is gone."""
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (FileNotFoundError, ProcessLookupError):
        return []
