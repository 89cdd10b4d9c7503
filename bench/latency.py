"""Latency figures: a run end to end, an event to a WebSocket client."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import redis

from client.follow import Follower

from .api import submit, wait_finished
from .report import figure, percentiles
from .stack import WORKER, Stack


def run_latency_3(stack: Stack, runs: int = 60, warmup: int = 5) -> dict[str, Any]:
    """POST /api/runs to run_finished appended, three sequential echo steps, idle system,
    the web in the bench process (bench/production.py has the production shape)."""
    client = redis.Redis.from_url(stack.settings.redis_url, decode_responses=True)
    samples = []
    for i in range(warmup + runs):
        started = time.perf_counter()
        wait_finished(client, submit(stack, "bench_three_echo"))
        if i >= warmup:
            samples.append((time.perf_counter() - started) * 1000)
    return figure(
        "run_latency_3_in_process",
        percentiles(samples),
        "ms",
        f"{runs} runs one at a time; {stack.setup}",
    )


def mcp_step_latency(stack: Stack, runs: int = 60, warmup: int = 5) -> list[dict[str, Any]]:
    """A one-step run calling an MCP tool against the same run calling a Python tool.

    POST to run_finished, one run at a time, the two kinds alternating so that both see
    the same machine; the MCP server is the suite's test server over stdio. Measured
    once the start-up listings are over and the session is open (the warm-up opens it).
    """
    client = redis.Redis.from_url(stack.settings.redis_url, decode_responses=True)
    settle(stack)
    samples: dict[str, list[float]] = {"bench_mcp_echo": [], "bench_one_echo": []}
    for i in range(warmup + runs):
        for scenario, kept in samples.items():
            started = time.perf_counter()
            wait_finished(client, submit(stack, scenario))
            if i >= warmup:
                kept.append((time.perf_counter() - started) * 1000)
    python = percentiles(samples["bench_one_echo"])
    return [
        figure(
            "mcp_step_latency",
            percentiles(samples["bench_mcp_echo"]),
            "ms",
            f"{runs} one-step runs calling the test MCP server's echo over stdio, POST to "
            f"run_finished, alternating with the same run calling the Python echo "
            f"(python_step_latency); {stack.setup}",
        ),
        figure(
            "python_step_latency",
            python,
            "ms",
            f"{runs} one-step runs calling the built-in echo, measured alongside "
            f"mcp_step_latency; {stack.setup}",
        ),
    ]


def settle(stack: Stack, timeout_s: float = 60.0) -> None:
    """Until the web and the worker have each listed the MCP servers once (a subprocess
    each, at start), so that their work is not measured."""
    log = stack.log_dir / f"{WORKER}.log"
    mcp = stack.app.extensions["stepstream"].mcp
    deadline = time.monotonic() + timeout_s
    while not (mcp.knows("demo.echo") and "MCP server 'demo'" in log.read_text()):
        if time.monotonic() > deadline:
            raise TimeoutError("the MCP server was not listed")
        time.sleep(0.1)  # polling for the start-up listings to end


def event_latency_1(stack: Stack, runs: int = 3) -> dict[str, Any]:
    """From an event's append (its `ts`, Redis' clock) to its arrival at a WS client."""
    samples = []
    for _ in range(runs):
        run_id = submit(stack, "bench_progress")
        live = False
        for event in Follower(stack.url, run_id, "ws", read_timeout=30):
            received = time.time()
            if event["type"] == "step_started":
                live = True  # from here on, events are live rather than replayed
            elif live and event["type"] == "step_progress":
                appended = datetime.fromisoformat(event["ts"]).timestamp()
                samples.append((received - appended) * 1000)
    return figure(
        "event_latency_1",
        percentiles(samples),
        "ms",
        f"{len(samples)} step_progress events, 1 WebSocket subscriber; {stack.setup}",
    )
