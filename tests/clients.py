"""The tests' clients of the API: thin layers over the client library (client/).

`Follower` follows a run to its end across reconnections (`client.follow.Follower`).
`ws_events` and `sse_events` read one connection, for tests that assert on what a
single connection carries (its close code, its answer to a cursor); `ws_connection`
and `sse_connection` open one for tests that read it themselves.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import httpx

from client.api import Api
from client.follow import Backoff
from client.follow import Follower as ClientFollower
from client.sse import SSEMessage
from client.streams import SSEStream, WSStream, decode_event
from client.streams import ws_url as to_ws_url

TERMINAL = ("succeeded", "failed", "cancelled")

Event = dict[str, Any]


def event_of(data: str | bytes) -> Event:
    """The event a frame carries; a frame that is not one fails the test."""
    event = decode_event(data)
    assert not isinstance(event, str), f"{event}: {data[:200]!r}"
    return event


def first_event(frames: Iterable[str | bytes]) -> Event:
    """The first event of a connection (`WSStream.frames()`, or the `data` of
    `SSEStream.messages()`)."""
    for data in frames:
        return event_of(data)
    raise AssertionError("the stream ended without an event")


def ws_connection(
    url: str,
    run_id: str,
    after: str | None = None,
    query: str = "",
    headers: Mapping[str, str] | None = None,
    timeout: float = 30,
    **options: Any,
) -> WSStream:
    """One WebSocket on a run's stream (`url` is http:// or ws://); `query` is added as
    it is (`access_token=...`). A refused handshake raises
    `websocket.WebSocketBadStatusException`."""
    params = "&".join(p for p in (f"after={after}" if after else "", query) if p)
    target = f"{to_ws_url(url)}/api/runs/{run_id}/ws" + (f"?{params}" if params else "")
    return WSStream(target, headers=headers, timeout=timeout, **options)


def ws_events(
    ws_url: str,
    run_id: str,
    after: str | None = None,
    stop_after: int | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 30,
) -> tuple[list[Event], int | None]:
    """One WebSocket on a run: its events and its close code (None when this side hung
    up after `stop_after` events)."""
    events: list[Event] = []
    with ws_connection(ws_url, run_id, after, headers=headers, timeout=timeout) as stream:
        for data in stream.frames():
            events.append(event_of(data))
            if stop_after is not None and len(events) >= stop_after:
                break
    return events, stream.close_code


def ws_read_until(stream: WSStream, predicate: Any) -> list[Event]:
    """Events from an open WebSocket up to the first one that satisfies `predicate`."""
    seen = []
    for data in stream.frames():
        seen.append(event_of(data))
        if predicate(seen[-1]):
            return seen
    raise AssertionError(f"closed with {stream.close_code} before the event awaited: {seen[-3:]}")


def ws_read_rest(stream: WSStream) -> tuple[list[Event], int | None]:
    """The rest of an open WebSocket's events, and its close code."""
    return [event_of(data) for data in stream.frames()], stream.close_code


def sse_connection(
    url: str,
    run_id: str,
    after: str | None = None,
    last_event_id: str | None = None,
    query: str = "",
    headers: Mapping[str, str] | None = None,
    timeout: float = 30,
    http: httpx.Client | None = None,
    on_comment: Any = None,
) -> SSEStream:
    """One GET of a run's SSE stream (closed with the `SSEStream`)."""
    params = {"after": after} if after else {}
    hdrs = dict(headers or {})
    if last_event_id:
        hdrs["Last-Event-ID"] = last_event_id
    target = f"{url}/api/runs/{run_id}/events" + (f"?{query}" if query else "")
    return SSEStream(
        http or _HTTP,
        target,
        params=params,
        headers=hdrs,
        timeout=timeout,
        on_comment=on_comment,
    )


#: One HTTP client for the one-connection readers (each new one builds a TLS context).
_HTTP = httpx.Client()


def checked(messages: Iterable[SSEMessage]) -> Iterator[Event]:
    """The events of SSE messages, each frame's `id` and `event` checked against it."""
    for message in messages:
        event = event_of(message.data)
        assert message.id == event["id"]
        assert message.event == event["type"]
        yield event


def sse_events(
    url: str,
    run_id: str,
    after: str | None = None,
    last_event_id: str | None = None,
    stop_after: int | None = None,
    headers: dict[str, str] | None = None,
) -> list[Event]:
    """One SSE connection on a run: its events (none when it is 204: the run finished
    at the cursor)."""
    events: list[Event] = []
    with sse_connection(url, run_id, after, last_event_id, headers=headers) as stream:
        response = stream.response
        if response.status_code == 204:
            return events
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for event in checked(stream.messages()):
            events.append(event)
            if stop_after is not None and len(events) >= stop_after:
                break
    return events


def submit(
    url: str,
    scenario_id: str,
    run_input: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Event:
    body = {"scenario_id": scenario_id, "input": run_input or {}}
    with Api(url, timeout=10) as api:
        response = api.request("POST", "/api/runs", json=body, headers=headers or {})
    assert response.status_code == 202, response.text
    created: Event = response.json()
    assert response.headers["Location"] == f"/api/runs/{created['run_id']}"
    return created


class Follower:
    """A client that follows a run to its end the way a careful front end would (the
    client library's follower, `client.follow.Follower`): when the stream is cut short
    (closed with 1013 or 1001, ended without `run_finished`, refused with 503 or
    unreachable), it reconnects with the last id it saw, to the next of `base_url`'s
    alternatives if it has any (servers behind a load balancer).

    `events` is everything received, in order, across connections, as it comes.
    """

    def __init__(self, base_url: str | list[str], run_id: str, transport: str) -> None:
        assert transport in ("ws", "sse")
        self.transport = transport
        self.run_id = run_id
        self.events: list[Event] = []
        self.follower = ClientFollower(
            base_url,
            run_id,
            "ws" if transport == "ws" else "sse",
            backoff=Backoff(first=0.05, most=0.5),
            read_timeout=30,
        )

    @property
    def base_url(self) -> str:
        return self.follower.base_url

    @property
    def connections(self) -> int:
        return self.follower.connections

    @property
    def cut_short(self) -> int:
        return self.follower.cut_short

    @property
    def last_id(self) -> str | None:
        return self.follower.cursor.last_id

    @property
    def finished(self) -> bool:
        return self.follower.finished

    def run(self, deadline_s: float = 60.0) -> None:
        """Follow to `run_finished`; fails when reconnecting gets nowhere for
        `deadline_s`."""
        self.follower.retry_for = deadline_s
        for event in self.follower:
            self.events.append(event)  # as it comes: other threads watch the list
        # The library drops an event sent twice; a test of exactly-once must see it.
        assert self.follower.cursor.repeats == 0, (
            f"{self.follower.cursor.repeats} event(s) were sent again"
        )
