"""Cursors the streams cannot honour are answered honestly, and hurt no one else: one
beyond the end is 400 (and never moves the hub), one older than what trimming kept is
410, a finished EventSource is told to stop (204), and a plain GET of the WebSocket
route is 400."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import httpx
import pytest
import websocket
from clients import sse_events, ws_connection, ws_events
from conftest import ONE_STEP as SCENARIO
from conftest import LiveServer, serve, wait_for

from tasks.config import Settings
from tasks.store import RunStore

JSON = {"Accept": "application/json"}


class Run:
    """A running run whose one step the test makes talk, then finishes."""

    def __init__(self, settings: Settings) -> None:
        self.store = RunStore.from_settings(settings)
        self.run_id = str(uuid.uuid4())
        self.store.create_run(self.run_id, SCENARIO, {})
        self.store.start_run(self.run_id, "w@test")
        self.store.start_step(self.run_id, "only", 1, "w@test")
        self.said = 0

    def say(self, n: int = 1, size: int = 10) -> None:
        for _ in range(n):
            self.said += 1
            message = {"message": f"{self.said} " + "x" * size}
            self.store.step_event(self.run_id, "only", 1, "step_log", message, number=self.said)

    def finish(self) -> None:
        self.store.finish_step(self.run_id, "only", 1, "succeeded", "", "1")

    def ids(self) -> list[str]:
        return [e.id for e in self.store.read_events(self.run_id, "0", 100_000)]


@pytest.fixture
def quiet(settings: Settings, quiet_db: str) -> Settings:
    """A store database no worker sweeps: the runs here have a made-up worker."""
    return replace(settings, redis_url=quiet_db)


@pytest.fixture
def server(quiet: Settings, app_factory: Any) -> Iterator[LiveServer]:
    """The web on Werkzeug's threaded server, as `flask run` serves it."""
    with serve(app_factory(redis_url=quiet.redis_url)) as live:
        yield live


def ws_refusal(server: LiveServer, run_id: str, after: str) -> int | None:
    """The HTTP status of a refused handshake; None when the upgrade went through."""
    try:
        conn = ws_connection(server.url, run_id, after, timeout=10)
    except websocket.WebSocketBadStatusException as exc:
        return int(exc.status_code)
    conn.close()
    return None


def test_a_cursor_beyond_the_stream_is_400_and_blinds_no_other_follower(
    quiet: Settings, server: LiveServer
) -> None:
    run = Run(quiet)
    last_ms = int(run.ids()[-1].split("-")[0])
    future = f"{last_ms + 3_600_000}-0"
    url = f"{server.url}/api/runs/{run.run_id}/events"
    hub = server.app.extensions["stepstream"].hub

    # The first subscriber of the run on this process brings a cursor from the future.
    answers: dict[str, Any] = {}

    def future_sse() -> None:
        with httpx.stream("GET", url, headers={"Last-Event-ID": future}, timeout=30) as r:
            answers["sse"] = (r.status_code, r.read())

    threading.Thread(target=future_sse, daemon=True).start()
    # Refused at once, or (as it once was) let into the hub, where it is waited for.
    wait_for(lambda: "sse" in answers or hub.subscriber_count() == 1, what="the future cursor")

    results: dict[str, Any] = {}
    followers = [
        threading.Thread(
            target=lambda: results.update(sse=sse_events(server.url, run.run_id)), daemon=True
        ),
        threading.Thread(
            target=lambda: results.update(ws=ws_events(server.ws_url, run.run_id, timeout=15)),
            daemon=True,
        ),
    ]
    for thread in followers:
        thread.start()
    # Both followers in the hub (with the future one, if it was let in), before the run
    # goes on: what they get from here on is the hub's doing.
    wait_for(
        lambda: hub.subscriber_count() == (2 if "sse" in answers else 3),
        what="the followers in the hub",
    )
    run.say(5)
    run.finish()
    for thread in followers:
        thread.join(timeout=20)
    everything = run.ids()
    assert [e["id"] for e in results.get("sse", [])] == everything
    events, code = results.get("ws", ([], None))
    assert ([e["id"] for e in events], code) == (everything, 1000)

    status, body = answers["sse"]
    assert status == 400 and b"beyond the last event" in body
    page = httpx.get(url, params={"after": future}, headers=JSON)
    assert page.status_code == 400
    assert page.json()["error"]["details"] == {"last_id": everything[-1]}
    assert ws_refusal(server, run.run_id, future) == 400


def test_a_cursor_older_than_what_trimming_kept_is_410_never_a_silent_gap(
    quiet: Settings, server: LiveServer
) -> None:
    run = Run(replace(quiet, event_maxlen=10))
    written = run.ids()
    run.say(400)  # `MAXLEN ~` trims whole nodes of the stream (100 entries each)
    run.finish()
    kept = run.ids()
    first = run.store.read_events(run.run_id, "0", 1)[0]
    assert first.seq > 1 and kept[0] not in written  # the start of the run is gone
    url = f"{server.url}/api/runs/{run.run_id}/events"
    stale = written[-1]  # a client that saw step_started, then went away

    page = httpx.get(url, params={"after": stale}, headers=JSON)
    assert page.status_code == 410
    error = page.json()["error"]
    assert error["code"] == "cursor_expired" and "trimmed" in error["message"]
    assert error["details"] == {"first_id": kept[0], "first_seq": first.seq}
    sse = httpx.get(url, headers={"Last-Event-ID": stale}, timeout=10)
    assert sse.status_code == 410 and sse.json()["error"]["code"] == "cursor_expired"
    # A browser never sees the status of a refused handshake: the WebSocket opens and
    # closes at once with 4410.
    assert ws_events(server.ws_url, run.run_id, after=stale) == ([], 4410)

    # From the beginning is what is kept, said so: seq starts above 1, and HTTP says
    # how many events were dropped before it.
    whole = httpx.get(url, params={"limit": 1000}, headers=JSON)
    assert whole.status_code == 200
    assert whole.headers["Stepstream-Trimmed"] == str(first.seq - 1)
    assert [e["id"] for e in whole.json()["events"]] == kept
    assert [e["id"] for e in sse_events(server.url, run.run_id)] == kept
    events, code = ws_events(server.ws_url, run.run_id)
    assert ([e["id"] for e in events], code) == (kept, 1000)
    # Any cursor within what is kept reads on as usual.
    assert [e["id"] for e in sse_events(server.url, run.run_id, after=kept[0])] == kept[1:]
    within = httpx.get(url, params={"after": kept[0]}, headers=JSON)
    assert "Stepstream-Trimmed" not in within.headers


def test_an_event_source_reconnecting_after_run_finished_is_told_to_stop(
    quiet: Settings, server: LiveServer
) -> None:
    run = Run(quiet)
    run.say(2)
    run.finish()
    ids = run.ids()
    final = ids[-1]
    url = f"{server.url}/api/runs/{run.run_id}/events"
    last_ms = int(final.split("-")[0])
    for cursor in (final, f"{last_ms + 1}-0"):
        answer = httpx.get(url, headers={"Last-Event-ID": cursor}, timeout=10)
        assert (answer.status_code, answer.content) == (204, b"")
    # One opened with `?after=` reconnects with that URL: its Last-Event-ID is what counts.
    answer = httpx.get(url, params={"after": ids[0]}, headers={"Last-Event-ID": final})
    assert answer.status_code == 204
    # One opened at the end (no Last-Event-ID yet) must not loop either.
    assert httpx.get(url, params={"after": final}, timeout=10).status_code == 204
    # Just before the end is a replay of run_finished, as ever.
    assert [e["id"] for e in sse_events(server.url, run.run_id, last_event_id=ids[-2])] == [final]
    # The JSON page and the WebSocket keep their ways: an empty page, a close at once.
    page = httpx.get(url, params={"after": final}, headers=JSON)
    assert page.json() == {"events": [], "next_after": None}
    assert ws_events(server.ws_url, run.run_id, after=final) == ([], 1000)


def test_a_plain_get_of_the_websocket_route_is_400(quiet: Settings, server: LiveServer) -> None:
    run = Run(quiet)
    ws_route = f"{server.url}/api/runs/{run.run_id}/ws"
    expected = {"code": "bad_request", "message": "expected a WebSocket upgrade", "details": None}
    for headers in (
        {},
        # Upgrade headers without the handshake's key: no WebSocket can be opened.
        {"Connection": "Upgrade", "Upgrade": "websocket"},
    ):
        answer = httpx.get(ws_route, headers=headers)
        assert answer.status_code == 400, answer.text
        assert answer.json() == {"error": expected}
