"""Talking to the stack under measurement: submit runs, wait for them to finish."""

from __future__ import annotations

import json
from typing import Any, cast

import httpx
import redis

from tasks import keys

from .stack import Stack

#: One client for every request: a new httpx client per call would add its own set-up
#: (tens of ms for the TLS context) to every figure.
_http = httpx.Client(timeout=30)


def submit(stack: Stack, scenario_id: str, http: httpx.Client | None = None) -> str:
    response = (http or _http).post(f"{stack.url}/api/runs", json={"scenario_id": scenario_id})
    response.raise_for_status()
    return str(response.json()["run_id"])


def wait_finished(client: redis.Redis, run_id: str, timeout_s: float = 120.0) -> None:
    """Block until the run's stream holds `run_finished`."""
    stream, cursor = keys.run_events(run_id), "0-0"
    block_ms = int(timeout_s * 1000)
    while True:
        reply = cast(
            "list[tuple[str, list[tuple[str, dict[str, str]]]]]",
            client.xread({stream: cursor}, count=1000, block=block_ms) or [],
        )
        if not reply:
            raise TimeoutError(f"run {run_id} did not finish within {timeout_s:g} s")
        for _, entries in reply:
            for entry_id, fields in entries:
                cursor = entry_id
                if '"type":"run_finished"' in fields["data"]:
                    return


def stream_tip(client: redis.Redis, stream: str) -> str:
    """The id of the stream's last entry ("0-0" when empty): read after it for new ones."""
    last = cast("list[tuple[str, Any]]", client.xrevrange(stream, count=1))
    return last[0][0] if last else "0-0"


def read_finished(
    client: redis.Redis, stream: str, cursor: str, block_ms: int
) -> tuple[str, list[str]]:
    """One read of `stream` after `cursor`, many events at once: the new cursor, and the
    runs whose `run_finished` it brought."""
    reply = cast(
        "list[tuple[str, list[tuple[str, dict[str, str]]]]]",
        client.xread({stream: cursor}, count=1000, block=block_ms) or [],
    )
    finished = []
    for _, entries in reply:
        for entry_id, fields in entries:
            cursor = entry_id
            data = fields["data"]
            if "run_finished" in data:  # a cheap test first; most events are not
                event = json.loads(data)
                if event["type"] == "run_finished":
                    finished.append(event["run_id"])
    return cursor, finished
