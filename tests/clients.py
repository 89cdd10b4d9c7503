"""Small real clients of the API for tests: HTTP, WebSocket and SSE."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import websocket

from client.sse import SSEDecoder, sse_lines

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
    # websocket-client checks UTF-8 in pure Python, byte by byte: slower than the
    # server for big events. json.loads below rejects what is not valid text anyway.
    conn = websocket.create_connection(
        url, timeout=timeout, header=headers or [], skip_utf8_validation=True
    )
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
    """Yield SSE frames: the fields of the lines between two blank lines, as
    field -> value (`data` lines joined with LF, comments under ''). Lines end only at
    CR, LF or CRLF, as the WHATWG standard says."""
    params = {"after": after} if after else {}
    hdrs = dict(headers or {})
    if last_event_id:
        hdrs["Last-Event-ID"] = last_event_id
    with httpx.stream(
        "GET", f"{url}/api/runs/{run_id}/events", params=params, headers=hdrs, timeout=30
    ) as response:
        if response.status_code == 204:
            return  # the run has finished and nothing follows the cursor
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        frame: dict[str, str] = {}
        for line in sse_lines(response.iter_bytes()):
            if line == "":
                if frame:
                    yield frame
                frame = {}
                continue
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            frame[field] = (
                f"{frame[field]}\n{value}" if field == "data" and field in frame else value
            )


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


class Follower:
    """A client that follows a run to its end the way a careful front end would: when
    the stream is cut short (closed with 1013 or 1001, ended without `run_finished`,
    refused with 503 or unreachable), it reconnects with the last id it saw, to the
    next of `base_url`'s alternatives if it has any (servers behind a load balancer).

    `events` is everything received, in order, across connections.
    """

    def __init__(self, base_url: str | list[str], run_id: str, transport: str) -> None:
        self.base_urls = [base_url] if isinstance(base_url, str) else list(base_url)
        self.base_url = self.base_urls[0]
        self.run_id = run_id
        self.transport = transport
        self.events: list[dict[str, Any]] = []
        self.connections = 0
        self.cut_short = 0

    @property
    def last_id(self) -> str | None:
        return self.events[-1]["id"] if self.events else None

    @property
    def finished(self) -> bool:
        return bool(self.events) and self.events[-1]["type"] == "run_finished"

    def run(self, deadline_s: float = 60.0) -> None:
        deadline = time.monotonic() + deadline_s
        pause = 0.05
        while not self.finished:
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.transport} follower: no run_finished in time")
            try:
                self.connections += 1
                if self.transport == "ws":
                    self._follow_ws()
                else:
                    self._follow_sse()
                pause = 0.05
            except (OSError, httpx.HTTPError, websocket.WebSocketException, Refused):
                time.sleep(pause)  # back off before reconnecting, as a client should
                pause = min(pause * 2, 0.5)
            if not self.finished:
                self.cut_short += 1
                self.base_url = self.base_urls[self.cut_short % len(self.base_urls)]

    def _follow_ws(self) -> None:
        ws_url = "ws" + self.base_url[len("http") :]
        url = f"{ws_url}/api/runs/{self.run_id}/ws"
        if self.last_id:
            url += f"?after={self.last_id}"
        conn = websocket.create_connection(url, timeout=30)
        try:
            while True:
                opcode, data = conn.recv_data(control_frame=False)
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    return
                self.events.append(json.loads(data))
        finally:
            conn.close()

    def _follow_sse(self) -> None:
        headers = {"Last-Event-ID": self.last_id} if self.last_id else {}
        with httpx.stream(
            "GET", f"{self.base_url}/api/runs/{self.run_id}/events", headers=headers, timeout=30
        ) as response:
            if response.status_code != 200:
                raise Refused(response.status_code)
            for message in SSEDecoder().messages(response.iter_bytes()):
                self.events.append(json.loads(message.data))


class Refused(Exception):
    """The server answered a stream request with an error status (503 during outages)."""
