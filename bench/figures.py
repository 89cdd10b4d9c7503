"""The figures, each measured against a running stack."""

from __future__ import annotations

import json
import statistics
import time
from datetime import datetime
from typing import Any

import httpx
import redis
import websocket

from tasks import keys

from .stack import Stack


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {"p50": round(statistics.median(ordered), 2), "p99": round(p99, 2)}


def figure(name: str, value: Any, unit: str, setup: str) -> dict[str, Any]:
    return {"name": name, "value": value, "unit": unit, "setup": setup}


#: One client for every request: a new httpx client per call would add its own set-up
#: (tens of ms for the TLS context) to every figure.
_http = httpx.Client(timeout=30)


def submit(stack: Stack, scenario_id: str) -> str:
    response = _http.post(f"{stack.url}/api/runs", json={"scenario_id": scenario_id})
    response.raise_for_status()
    return str(response.json()["run_id"])


def wait_finished(client: redis.Redis, run_id: str) -> None:
    stream, cursor = keys.run_events(run_id), "0-0"
    while True:
        reply: list[Any] = client.xread({stream: cursor}, block=10_000) or []  # type: ignore[assignment]
        for _, entries in reply:
            for entry_id, fields in entries:
                cursor = entry_id
                if '"type":"run_finished"' in fields["data"]:
                    return


def run_latency_3(stack: Stack, runs: int = 60, warmup: int = 5) -> dict[str, Any]:
    """POST /api/runs to run_finished appended, three sequential echo steps, idle system."""
    client = redis.Redis.from_url(stack.settings.redis_url, decode_responses=True)
    samples = []
    for i in range(warmup + runs):
        started = time.perf_counter()
        wait_finished(client, submit(stack, "bench_three_echo"))
        if i >= warmup:
            samples.append((time.perf_counter() - started) * 1000)
    return figure(
        "run_latency_3", percentiles(samples), "ms", f"{runs} runs one at a time; {stack.setup}"
    )


def event_latency_1(stack: Stack, runs: int = 3) -> dict[str, Any]:
    """From an event's append (its `ts`, Redis' clock) to its arrival at a WS client."""
    samples = []
    for _ in range(runs):
        run_id = submit(stack, "bench_progress")
        ws = websocket.create_connection(f"ws{stack.url[4:]}/api/runs/{run_id}/ws", timeout=30)
        live = False
        try:
            while True:
                data = ws.recv()
                received = time.time()
                if not data:
                    break
                event = json.loads(data)
                if event["type"] == "step_started":
                    live = True  # from here on, events are live rather than replayed
                elif live and event["type"] == "step_progress":
                    appended = datetime.fromisoformat(event["ts"]).timestamp()
                    samples.append((received - appended) * 1000)
                if event["type"] == "run_finished":
                    break
        finally:
            ws.close()
    return figure(
        "event_latency_1",
        percentiles(samples),
        "ms",
        f"{len(samples)} step_progress events, 1 WebSocket subscriber; {stack.setup}",
    )
