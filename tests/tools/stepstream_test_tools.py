"""Tools for the execution-semantics tests, loaded through the real entry-point group.

`stepstream_test_tools-0.1.dist-info` next to this module declares them in
`[stepstream.tools]`, so any process with this directory on its path (the test process
and, through PYTHONPATH, the `celery worker` subprocesses) registers them exactly as it
would an installed plugin.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded

from tasks.errors import ToolFailure
from tasks.tools import Tool, ToolContext, tool

#: How often `barrier` looks at its directory.
BARRIER_POLL_S = 0.01
#: How long `stubborn` naps between looks at the clock (never at `ctx.cancelled`).
STUBBORN_NAP_S = 0.05


@tool(
    "flaky",
    description=(
        "Count calls in a file; fail while the count is at most fail_times, then succeed."
    ),
    input_schema={
        "type": "object",
        "required": ["counter_file", "fail_times"],
        "additionalProperties": False,
        "properties": {
            "counter_file": {"type": "string", "minLength": 1},
            "fail_times": {"type": "integer", "minimum": 0},
        },
    },
)
def flaky(ctx: ToolContext, /, *, counter_file: str, fail_times: int) -> dict[str, Any]:
    path = Path(counter_file)
    previous = int(path.read_text() or "0") if path.exists() else 0
    attempts = previous + 1
    path.write_text(str(attempts))
    if attempts <= fail_times:
        raise ToolFailure(f"attempt {attempts} failed")
    return {"attempts": attempts}


@tool(
    "barrier",
    description=(
        "Create <dir>/<name>, then wait until `parties` files exist in dir: every party "
        "passes only if all of them were running at the same time."
    ),
    input_schema={
        "type": "object",
        "required": ["dir", "name", "parties"],
        "additionalProperties": False,
        "properties": {
            "dir": {"type": "string", "minLength": 1},
            "name": {"type": "string", "pattern": "^[A-Za-z0-9_.-]+$"},
            "parties": {"type": "integer", "minimum": 1},
            "timeout_s": {"type": "number", "exclusiveMinimum": 0, "default": 10},
        },
    },
)
def barrier(
    ctx: ToolContext, /, *, dir: str, name: str, parties: int, timeout_s: float = 10
) -> dict[str, Any]:
    folder = Path(dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).touch()
    deadline = time.monotonic() + timeout_s
    while sum(1 for _ in folder.iterdir()) < parties:
        if time.monotonic() > deadline:
            raise ToolFailure("barrier timed out")
        time.sleep(BARRIER_POLL_S)
    return {"name": name}


@tool(
    "stubborn",
    description="Busy-wait for `seconds`, never looking at ctx.cancelled.",
    input_schema={
        "type": "object",
        "required": ["seconds"],
        "additionalProperties": False,
        "properties": {"seconds": {"type": "number", "minimum": 0}},
    },
)
def stubborn(ctx: ToolContext, /, *, seconds: float) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(STUBBORN_NAP_S)
    return {"done": True}


@tool(
    "immortal",
    description="Busy-wait for `seconds`, swallowing Celery's soft time limit exception.",
    input_schema={
        "type": "object",
        "required": ["seconds"],
        "additionalProperties": False,
        "properties": {"seconds": {"type": "number", "minimum": 0}},
    },
)
def immortal(ctx: ToolContext, /, *, seconds: float) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            time.sleep(STUBBORN_NAP_S)
        except SoftTimeLimitExceeded:
            continue  # only the hard time limit can stop this one
    return {"done": True}


@tool(
    "pid_nap",
    description="Log this process's pid, then nap `seconds` on the first attempt only.",
    input_schema={
        "type": "object",
        "required": ["seconds"],
        "additionalProperties": False,
        "properties": {"seconds": {"type": "number", "minimum": 0}},
    },
)
def pid_nap(ctx: ToolContext, /, *, seconds: float) -> dict[str, Any]:
    ctx.log(f"pid {os.getpid()}")
    deadline = time.monotonic() + (seconds if ctx.attempt == 1 else 0)
    while time.monotonic() < deadline and not ctx.cancelled:
        time.sleep(STUBBORN_NAP_S)
    return {"attempt": ctx.attempt}


@tool(
    "journal",
    description=(
        "Append `<run> <step> <attempt> <pid>` to <dir>/journal as the execution starts, "
        "then nap `seconds` in `ticks` progress updates: a record of every execution."
    ),
    input_schema={
        "type": "object",
        "required": ["dir", "seconds"],
        "additionalProperties": False,
        "properties": {
            "dir": {"type": "string", "minLength": 1},
            "seconds": {"type": "number", "minimum": 0},
            "ticks": {"type": "integer", "minimum": 1, "default": 4},
        },
    },
)
def journal(ctx: ToolContext, /, *, dir: str, seconds: float, ticks: int = 4) -> dict[str, Any]:
    line = f"{ctx.run_id} {ctx.step} {ctx.attempt} {os.getpid()}\n"
    # One small O_APPEND write: lines from concurrent processes never interleave.
    fd = os.open(Path(dir) / "journal", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
    started = time.monotonic()
    for tick in range(1, ticks + 1):
        while time.monotonic() < started + seconds * tick / ticks:
            time.sleep(STUBBORN_NAP_S)
        ctx.progress(tick / ticks, f"{tick}/{ticks}")
    return {"attempt": ctx.attempt}


@tool(
    "crash",
    description=(
        "Raise a chained exception: a KeyError, handled by raising a ValueError from it, "
        "`depth` calls down two functions that call each other (a long traceback: "
        "alternating frames are not folded into 'Previous line repeated')."
    ),
    input_schema={
        "type": "object",
        "required": ["depth"],
        "additionalProperties": False,
        "properties": {"depth": {"type": "integer", "minimum": 1, "maximum": 400}},
    },
)
def crash(ctx: ToolContext, /, *, depth: int) -> None:
    _crash_down(depth)


def _crash_down(depth: int) -> None:
    if depth > 1:
        _crash_across(depth - 1)
        return
    try:
        {}["missing_key"]
    except KeyError as exc:
        raise ValueError("the innermost call gave up") from exc


def _crash_across(depth: int) -> None:
    _crash_down(depth)


TOOLS: tuple[Tool, ...] = (flaky, barrier, stubborn, immortal, pid_nap, journal, crash)


#: Where `fault` can make the worker fail after the tool itself has returned.
FAULT_POINTS = ("raise_surrogate", "finish_soft_limit", "finish_outage", "dispatch_outage")


@tool(
    "fault",
    description=(
        "Fault injection in the worker process that runs it, for this run only: "
        "raise_surrogate raises an exception whose message holds a lone surrogate; "
        "finish_soft_limit makes the first write of the attempt's end raise a soft time "
        "limit after it was applied; finish_outage makes every such write fail as if "
        "Redis were gone; dispatch_outage makes the dispatches after it fail as if "
        "the broker were gone for 2 s."
    ),
    input_schema={
        "type": "object",
        "required": ["point"],
        "additionalProperties": False,
        "properties": {"point": {"enum": list(FAULT_POINTS)}},
    },
)
def fault(ctx: ToolContext, /, *, point: str) -> dict[str, Any]:
    import redis
    from kombu.exceptions import OperationalError

    from tasks.redis_client import backend_errors
    from tasks.runtime import get_runtime
    from worker import steps as runner

    if point == "raise_surrogate":
        raise RuntimeError("broken \udc80 text")
    store = get_runtime().store
    run_id = ctx.run_id
    if point in ("finish_soft_limit", "finish_outage"):
        real = store.finish_step
        fired: list[bool] = []

        def finish_step(*args: Any, **kwargs: Any) -> Any:
            if args[0] != run_id:
                return real(*args, **kwargs)
            if point == "finish_outage":
                with backend_errors:  # as the real store raises it
                    raise redis.ConnectionError("injected: Redis unreachable")
            result = real(*args, **kwargs)
            if not fired:
                fired.append(True)
                raise SoftTimeLimitExceeded()
            return result

        store.finish_step = finish_step  # type: ignore[method-assign]
    else:
        real_publish = runner._publish
        # Longer than the worker's retry window (STEPSTREAM_REDIS_RETRY_S in the test).
        outage_s = 2.0
        since: list[float] = []

        def publish(run: str, *args: Any) -> None:
            if run == run_id:
                since[:] = since or [time.monotonic()]
                if time.monotonic() - since[0] < outage_s:
                    raise OperationalError("injected: broker unreachable")
            real_publish(run, *args)

        runner._publish = publish
    return {"point": point}
