"""Small real clients of the API for tests: HTTP, WebSocket and SSE."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import websocket

TERMINAL = ("succeeded", "failed", "cancelled")


def ws_events(
    ws_url: str,
    run_id: str,
    after: str | None = None,
    stop_after: int | None = None,
    headers: list[str] | None = None,
    timeout: float = 30,
) -> tuple[list[dict[str, Any]], int | None]:
    """Follow a run over WebSocket; returns the events and the close code."""
    url = f"{ws_url}/api/runs/{run_id}/ws" + (f"?after={after}" if after else "")
    conn = websocket.create_connection(url, timeout=timeout, header=headers or [])
    events: list[dict[str, Any]] = []
    code = None
    try:
        while stop_after is None or len(events) < stop_after:
            opcode, data = conn.recv_data(control_frame=False)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                code = int.from_bytes(data[:2], "big") if len(data) >= 2 else None
                break
            events.append(json.loads(data))
    finally:
        conn.close()
    return events, code


def sse_frames(
    url: str,
    run_id: str,
    after: str | None = None,
    last_event_id: str | None = None,
    headers: dict[str, str] | None = None,
) -> Iterator[dict[str, str]]:
    """Yield SSE frames (dicts of field -> value; comments under ':')."""
    params = {"after": after} if after else {}
    hdrs = dict(headers or {})
    if last_event_id:
        hdrs["Last-Event-ID"] = last_event_id
    with httpx.stream(
        "GET", f"{url}/api/runs/{run_id}/events", params=params, headers=hdrs, timeout=30
    ) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        frame: dict[str, str] = {}
        for line in response.iter_lines():
            if line == "":
                if frame:
                    yield frame
                frame = {}
                continue
            field, _, value = line.partition(":")
            frame[field] = value.removeprefix(" ")


def sse_events(
    url: str,
    run_id: str,
    after: str | None = None,
    last_event_id: str | None = None,
    stop_after: int | None = None,
    headers: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for frame in sse_frames(url, run_id, after, last_event_id, headers):
        if "data" not in frame:
            continue
        event = json.loads(frame["data"])
        assert frame["id"] == event["id"]
        assert frame["event"] == event["type"]
        events.append(event)
        if stop_after is not None and len(events) >= stop_after:
            break
    return events


def submit(
    url: str,
    scenario_id: str,
    run_input: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    response = httpx.post(
        f"{url}/api/runs",
        json={"scenario_id": scenario_id, "input": run_input or {}},
        headers=headers or {},
        timeout=10,
    )
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    assert response.headers["Location"] == f"/api/runs/{body['run_id']}"
    return body
