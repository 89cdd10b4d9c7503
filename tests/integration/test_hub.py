"""The per-process hub: one Redis reader, many subscribers, a seamless join, bounded
queues, and a goodbye on shutdown."""

from __future__ import annotations

import json
import random
import signal
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from clients import sse_connection, sse_events, submit, ws_connection, ws_events
from conftest import ONE_STEP as SCENARIO
from conftest import LiveServer, WorkerProcess, serve, start_web, wait_for

from tasks import keys
from tasks.config import Settings
from tasks.events import Event
from tasks.step_events import EventWriter
from tasks.store import RunStore
from web import WEB_CLIENT_NAME, WEB_REDIS_CONNECTIONS
from web.hub import HUB_CONNECTIONS, Gone, Hub, Subscription


class Live:
    """A running run whose step the test makes talk, and a hub that follows it."""

    def __init__(self, settings: Settings, queue_limit: int = 1000) -> None:
        self.store = RunStore.from_settings(settings)
        self.run_id = str(uuid.uuid4())
        self.store.create_run(self.run_id, SCENARIO, {})
        self.store.start_run(self.run_id, "w@test")
        self.store.start_step(self.run_id, "only", 1, "w@test")
        self.hub = Hub(settings.redis_url, queue_limit=queue_limit)
        self.said = 0

    def say(self, n: int = 1) -> None:
        for _ in range(n):
            self.said += 1
            self.store.step_event(
                self.run_id, "only", 1, "step_log", {"message": str(self.said)}, number=self.said
            )

    def ids(self) -> list[str]:
        return [e.id for e in self.store.read_events(self.run_id, "0", 10_000)]

    def close(self) -> None:
        self.hub.stop()
        self.store.close()


def drain(sub: Subscription, count: int, timeout: float = 10) -> list[Event]:
    got: list[Event] = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        assert time.monotonic() < deadline, f"got {len(got)} of {count} events"
        got += sub.take(0.2)
    return got


@pytest.fixture
def quiet(
    settings: Settings, base_env: dict[str, str], quiet_db: str
) -> tuple[Settings, dict[str, str]]:
    """A store database no worker sweeps: the runs made here have a made-up holder,
    which a real worker's sweeper would rightly take over as lost."""
    return replace(settings, redis_url=quiet_db), {**base_env, "STEPSTREAM_REDIS_URL": quiet_db}


@pytest.fixture
def live(quiet: tuple[Settings, dict[str, str]]) -> Any:
    live = Live(quiet[0])
    yield live
    live.close()


def test_joiners_behind_level_with_or_ahead_of_the_hub_each_get_every_event_once(
    live: Live,
) -> None:
    start = live.ids()  # run_queued, run_started, step_started
    first = live.hub.subscribe(live.run_id, start[-1])
    live.say(3)
    assert [e.data["message"] for e in drain(first, 3)] == ["1", "2", "3"]
    # The hub has read past all of them now; one joiner replayed only run_queued, one
    # has everything, one is ahead of what the hub has delivered (a fresh replay).
    behind = live.hub.subscribe(live.run_id, start[0])
    level = live.hub.subscribe(live.run_id, live.ids()[-1])
    live.say(1)
    ahead = live.hub.subscribe(live.run_id, live.ids()[-1])
    live.say(1)
    everything = live.ids()
    assert [e.id for e in drain(behind, len(everything) - 1)] == everything[1:]
    assert [e.data["message"] for e in drain(level, 2)] == ["4", "5"]
    assert [e.data["message"] for e in drain(ahead, 1)] == ["5"]
    assert [e.data["message"] for e in drain(first, 2)] == ["4", "5"]
    for sub in (behind, level, ahead, first):
        assert sub.take(0.05) == []  # and nothing twice


def test_a_subscriber_that_falls_behind_is_dropped_and_the_others_are_not(
    quiet: tuple[Settings, dict[str, str]],
) -> None:
    live = Live(quiet[0], queue_limit=5)
    try:
        last = live.ids()[-1]
        slow = live.hub.subscribe(live.run_id, last)
        fast = live.hub.subscribe(live.run_id, last)
        got: list[Event] = []
        for _ in range(4):
            live.say(4)
            got += drain(fast, 4)
        with pytest.raises(Gone) as gone:
            while True:
                slow.take(1.0)  # drains at most the 5 it held, then learns it was dropped
        assert gone.value.reason == "slow"
        assert [e.data["message"] for e in got] == [str(i) for i in range(1, 17)]
    finally:
        live.close()


def test_a_joiner_from_the_future_never_moves_the_hub_and_others_get_every_event(
    live: Live,
) -> None:
    """A cursor past the stream's last id that reaches the hub anyway (checked before
    the stream changed, or by a caller that did not check) is turned away there: had it
    become the hub's read position, the followers after it would get nothing more."""
    last_ms = int(live.ids()[-1].split("-")[0])
    future = live.hub.subscribe(live.run_id, f"{last_ms + 3_600_000}-0")
    with pytest.raises(Gone) as gone:
        future.take(10)
    assert gone.value.reason == "cursor"
    start = live.ids()
    first = live.hub.subscribe(live.run_id, start[-1])
    second = live.hub.subscribe(live.run_id, start[0])
    live.say(3)
    live.store.finish_step(live.run_id, "only", 1, "succeeded", "", "1")
    everything = live.ids()
    assert [e.id for e in drain(first, len(everything) - len(start))] == everything[len(start) :]
    got = drain(second, len(everything) - 1)
    assert [e.id for e in got] == everything[1:] and got[-1].is_final
    for sub in (first, second):
        assert sub.take(0.05) == []


def test_a_subscriber_with_too_many_bytes_waiting_is_dropped_and_the_others_are_not(
    quiet: tuple[Settings, dict[str, str]],
) -> None:
    """Few events, but big ones: the byte cap cuts off the one that does not read."""
    live = Live(quiet[0], queue_limit=1000)
    live.hub.queue_bytes = 64 * 1024
    try:
        last = live.ids()[-1]
        slow = live.hub.subscribe(live.run_id, last)
        fast = live.hub.subscribe(live.run_id, last)
        got: list[Event] = []
        for i in range(1, 41):
            message = {"message": f"{i:03d} " + "x" * 4000}
            live.store.step_event(live.run_id, "only", 1, "step_log", message, number=i)
            got += drain(fast, i - len(got))
        with pytest.raises(Gone) as gone:
            while True:
                slow.take(1.0)
        assert gone.value.reason == "slow"
        assert [e.data["message"][:3] for e in got] == [f"{i:03d}" for i in range(1, 41)]
    finally:
        live.close()


def test_subscribers_join_and_follow_while_the_request_pool_is_exhausted(
    quiet: tuple[Settings, dict[str, str]], app_factory: Any
) -> None:
    """Every connection of the web's request pool is held (a burst of slow requests):
    streaming runs on the hub's own connections, so followers over SSE and WebSocket
    join, get every event and the end, and none is dropped."""
    settings, _ = quiet
    live = Live(settings)
    app = app_factory(redis_url=settings.redis_url)
    pool = app.extensions["stepstream"].store.connection_pool
    held = [pool.get_connection() for _ in range(WEB_REDIS_CONNECTIONS)]
    results: dict[str, Any] = {}
    try:
        with serve(app) as server:
            threads = [
                threading.Thread(
                    target=lambda: results.update(sse=sse_events(server.url, live.run_id)),
                    daemon=True,
                ),
                threading.Thread(
                    target=lambda: results.update(ws=ws_events(server.ws_url, live.run_id)),
                    daemon=True,
                ),
            ]
            for thread in threads:
                thread.start()
            hub = app.extensions["stepstream"].hub
            wait_for(lambda: hub.subscriber_count() == 2, what="both followers in the hub")
            live.say(20)
            live.store.finish_step(live.run_id, "only", 1, "succeeded", "", "1")
            for thread in threads:
                thread.join(timeout=30)
    finally:
        for connection in held:
            pool.release(connection)
        # Nothing of this app may stay connected: later tests count connections.
        app.extensions["stepstream"].hub.stop()
        pool.disconnect()
        live.close()
    everything = live.ids()
    assert [e["id"] for e in results["sse"]] == everything
    events, code = results["ws"]
    assert ([e["id"] for e in events], code) == (everything, 1000)


@pytest.mark.slow
def test_200_subscribers_on_20_runs_each_get_every_event_once_on_few_connections(
    quiet: tuple[Settings, dict[str, str]], tmp_path: Path
) -> None:
    """Counted, not timed: half over WebSocket, half over SSE, to one gunicorn process."""
    settings, env = quiet
    r = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    db = str(r.connection_pool.connection_kwargs["db"])  # this test's own database
    runs = [Live(settings) for _ in range(20)]
    web = start_web(env, tmp_path, "web-200")
    ws_url = "ws" + web.url[len("http") :]
    results: dict[tuple[int, int], list[dict[str, Any]]] = {}

    def follow(i: int, j: int) -> None:
        run_id = runs[i].run_id
        if j % 2:
            results[i, j] = sse_events(web.url, run_id)
        else:
            results[i, j] = ws_events(ws_url, run_id, timeout=60)[0]

    threads = [
        threading.Thread(target=follow, args=(i, j), daemon=True)
        for i in range(20)
        for j in range(10)
    ]
    try:
        for thread in threads:
            thread.start()

        def following() -> bool:
            text = httpx.get(f"{web.url}/metrics").text
            return all(f'transport="{t}"}} 100.0' in text for t in ("ws", "sse"))

        wait_for(following, timeout=60, what="200 subscribers following")
        peak = 0
        for _ in range(50):  # appended while everyone follows, interleaved over runs
            for live in runs:
                live.say(4)
            # This web process's connections: named so, on this test's own database.
            mine = [c for c in r.client_list() if c.get("db") == db]
            peak = max(peak, sum(1 for c in mine if c.get("name") == WEB_CLIENT_NAME))
        for live in runs:
            live.store.finish_step(live.run_id, "only", 1, "succeeded", "", "1")
        for thread in threads:
            thread.join(timeout=60)
    finally:
        web.kill()
        for live in runs:
            live.close()
    # The capped pool and the hub's own connections, whatever the number of subscribers.
    assert 1 <= peak <= WEB_REDIS_CONNECTIONS + HUB_CONNECTIONS
    assert len(results) == 200
    for (i, _), events in results.items():
        stored = [e for e, _ in r.xrange(keys.run_events(runs[i].run_id))]
        assert len(stored) == 3 + 200 + 2
        assert [e["id"] for e in events] == stored  # every event, once, in order


def test_joining_while_events_are_appended_gets_the_seam_right(live: Live) -> None:
    """A tight loop: a writer appends without pause while subscribers join from random
    points of the stream, again and again; each sees a gap-free run of seq."""
    stop = threading.Event()

    def write() -> None:
        while not stop.is_set():
            live.say(1)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    rng = random.Random(7)
    try:
        for _ in range(150):
            ids = live.ids()
            start = rng.randrange(len(ids))
            seen: list[int] = []
            stream = live.hub.follow(live.run_id, ids[start], 2.0)
            for batch in stream:
                seen += [e.seq for e in batch]
                if len(seen) >= 40:
                    break
            stream.close()  # leaves the hub
            assert seen[:40] == list(range(start + 2, start + 42)), (start, seen[:5])
    finally:
        stop.set()
        writer.join()


def test_a_stopping_web_process_closes_websockets_with_1001(
    live_server: LiveServer, worker: WorkerProcess
) -> None:
    run = submit(live_server.url, "test_cancellable", {"seconds": 30})
    outcome: dict[str, Any] = {}

    def follow() -> None:
        outcome["ws"] = ws_events(live_server.ws_url, run["run_id"])

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    hub = live_server.app.extensions["stepstream"].hub
    wait_for(lambda: hub.subscriber_count() == 1, what="the subscriber to join the hub")
    hub.stop()
    thread.join(timeout=15)
    events, code = outcome["ws"]
    assert code == 1001
    assert events and events[-1]["type"] != "run_finished"
    # Leave no long run behind for the shared worker.
    assert httpx.post(f"{live_server.url}/api/runs/{run['run_id']}/cancel").status_code == 202


@pytest.mark.slow
def test_sigterm_to_the_production_server_says_going_away(
    base_env: dict[str, str], worker: WorkerProcess, tmp_path: Path
) -> None:
    """gunicorn with gevent workers, as `make up` and the image run it."""
    web = start_web(base_env, tmp_path, "web-term")
    try:
        run = submit(web.url, "test_cancellable", {"seconds": 30})
        ws_url = "ws" + web.url[len("http") :]
        outcome: dict[str, Any] = {}

        def follow_ws() -> None:
            outcome["ws"] = ws_events(ws_url, run["run_id"])

        def follow_sse() -> None:
            outcome["sse"] = sse_events(web.url, run["run_id"])

        threads = [threading.Thread(target=f, daemon=True) for f in (follow_ws, follow_sse)]
        for thread in threads:
            thread.start()
        metrics = f"{web.url}/metrics"
        wait_for(
            lambda: (
                'stepstream_stream_subscribers{transport="ws"} 1.0' in httpx.get(metrics).text
                and 'stepstream_stream_subscribers{transport="sse"} 1.0' in httpx.get(metrics).text
            ),
            what="both subscribers following",
        )
        started = time.monotonic()
        web.proc.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join(timeout=15)
        events, code = outcome["ws"]
        assert code == 1001 and events
        assert outcome["sse"] and outcome["sse"][-1]["type"] != "run_finished"
        assert web.proc.wait(timeout=15) == 0
        assert time.monotonic() - started < 10  # no waiting out the graceful timeout
    finally:
        web.kill()
        # Leave no long run behind for the shared worker: its step sees ctx.cancelled.
        store = RunStore.from_settings(Settings.from_env(base_env))
        store.cancel_run(run["run_id"])
        store.close()


@pytest.mark.slow
def test_a_long_replay_to_a_slow_websocket_client_arrives_intact(
    quiet: tuple[Settings, dict[str, str]], tmp_path: Path
) -> None:
    """20,000 events to a client that reads slower than the server writes: every frame
    whole (a partly written frame would corrupt the stream), every event once, in order."""
    settings, base_env = quiet
    live = Live(settings)
    writer = EventWriter(live.store, live.run_id, "only", 1)
    for i in range(1, 20_001):
        writer.put("step_progress", {"progress": i / 20_000, "message": "x" * 200}, i / 20_000)
    writer.close()
    live.store.finish_step(live.run_id, "only", 1, "succeeded", "", "1")
    web = start_web(base_env, tmp_path, "web-replay")
    try:
        seqs = []
        with ws_connection(web.url, live.run_id) as stream:
            for data in stream.frames():
                seqs.append(json.loads(data)["seq"])
                if len(seqs) % 500 == 0:
                    time.sleep(0.02)  # a slow reader: the server's send buffer fills up
    finally:
        web.kill()
        live.close()
    assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) == 3 + 20_000 + 2


@pytest.mark.slow
def test_a_websocket_client_that_stops_reading_is_closed_with_1013(
    quiet: tuple[Settings, dict[str, str]], tmp_path: Path
) -> None:
    """Live events pile up for a client that does not read, until the server gives up
    on it (1013, resume with `after`); a client that reads gets every event."""
    settings, base_env = quiet
    live = Live(settings)
    web = start_web({**base_env, "STEPSTREAM_STREAM_QUEUE": "300"}, tmp_path, "web-slow")
    ws_url = "ws" + web.url[len("http") :]
    metrics = f"{web.url}/metrics"
    try:
        stalled = ws_connection(ws_url, live.run_id)
        reader: dict[str, Any] = {}
        thread = threading.Thread(
            target=lambda: reader.update(result=ws_events(ws_url, live.run_id)), daemon=True
        )
        thread.start()
        wait_for(
            lambda: 'stepstream_stream_subscribers{transport="ws"} 2.0' in httpx.get(metrics).text,
            what="both clients live",
        )
        writer = EventWriter(live.store, live.run_id, "only", 1)
        # Far more than the socket buffers hold, at a pace a reading client keeps up with.
        for i in range(1, 4_001):
            writer.put("step_log", {"message": f"{i:06d} " + "x" * 4000})
            if i % 100 == 0:
                time.sleep(0.1)  # the load's pace, not a wait for a result
        writer.close()
        live.store.finish_step(live.run_id, "only", 1, "succeeded", "", "1")
        thread.join(timeout=60)
        received = sum(1 for _ in stalled.frames())
        code = stalled.close_code
        stalled.close()
    finally:
        web.kill()
        live.close()
    assert (code, received < 4_000) == (1013, True), received
    events, reader_code = reader["result"]
    assert reader_code == 1000 and len(events) == 3 + 4_000 + 2


@pytest.mark.slow
def test_clients_that_stop_reading_big_events_are_cut_off_by_bytes_and_readers_are_not(
    quiet: tuple[Settings, dict[str, str]], tmp_path: Path
) -> None:
    """Fewer events than STEPSTREAM_STREAM_QUEUE allows, but megabytes of them: the
    byte cap cuts off a WebSocket client (1013) and an SSE client (the response ends
    without run_finished) that stopped reading; clients that read get everything."""
    settings, base_env = quiet
    live = Live(settings)
    env = {**base_env, "STEPSTREAM_STREAM_QUEUE_BYTES": str(1 << 20)}
    web = start_web(env, tmp_path, "web-bytes")
    ws_url = "ws" + web.url[len("http") :]
    metrics = f"{web.url}/metrics"
    try:
        stalled_ws = ws_connection(ws_url, live.run_id)
        with sse_connection(web.url, live.run_id, timeout=60) as stalled_sse:
            readers: dict[str, Any] = {}
            threads = [
                threading.Thread(
                    target=lambda: readers.update(ws=ws_events(ws_url, live.run_id, timeout=60)),
                    daemon=True,
                ),
                threading.Thread(
                    target=lambda: readers.update(sse=sse_events(web.url, live.run_id)),
                    daemon=True,
                ),
            ]
            for thread in threads:
                thread.start()

            def all_live() -> bool:
                text = httpx.get(metrics).text
                gauge = 'stepstream_stream_subscribers{{transport="{}"}} 2.0'
                return all(gauge.format(t) in text for t in ("ws", "sse"))

            wait_for(all_live, what="all four clients live")
            writer = EventWriter(live.store, live.run_id, "only", 1)
            # 16 MB in 2,000 events, far below the event cap of 10,000.
            for i in range(1, 2_001):
                writer.put("step_log", {"message": f"{i:06d} " + "x" * 8000})
                if i % 50 == 0:
                    time.sleep(0.1)  # the load's pace, not a wait for a result
            writer.close()
            live.store.finish_step(live.run_id, "only", 1, "succeeded", "", "1")
            for thread in threads:
                thread.join(timeout=60)
            sse_types = [message.event for message in stalled_sse.messages()]
        received = sum(1 for _ in stalled_ws.frames())
        code = stalled_ws.close_code
        stalled_ws.close()
    finally:
        web.kill()
        live.close()
    assert (code, received < 2_000) == (1013, True), received
    assert sse_types and "run_finished" not in sse_types and len(sse_types) < 2_000
    events, reader_code = readers["ws"]
    assert reader_code == 1000 and len(events) == 3 + 2_000 + 2
    assert len(readers["sse"]) == 3 + 2_000 + 2
