"""The client library's follower (client/follow.py) against the real web and Redis,
over both transports: connections cut mid-run (a proxy in between drops them) lose and
repeat nothing; a cursor whose events were trimmed meanwhile is a `CursorExpired`; a
finished run ends the follow at once; refusals are errors; a server that stays away
is given up on.

The bookkeeping on its own and against scripted servers: tests/unit/test_follow.py.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from conftest import ONE_STEP, LiveServer, WorkerProcess, events_until_finished, serve, wait_for
from stacks import Event

from client.api import Api
from client.errors import ApiError, CursorExpired, GaveUp
from client.follow import Backoff, Follower
from tasks import keys
from tasks.config import Settings
from tasks.store import RunStore

TRANSPORTS = ["sse", "ws"]


class CuttingProxy:
    """127.0.0.1:<port> forwarded to a web server. `cut()` drops every connection it
    carries, as a load balancer or a NAT losing its state would; while `refusing`,
    new connections are closed as soon as they are accepted."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.refusing = False
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            doomed, self._open = self._open, []
        for sock in doomed:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self._listener.close()
        self.cut()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            if self.refusing:
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            with self._lock:
                self._open += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class Run:
    """A run of ONE_STEP driven by hand on a store no worker sweeps: its one step says
    as much as the test wants, then finishes."""

    def __init__(self, settings: Settings) -> None:
        self.store = RunStore.from_settings(settings)
        self.run_id = str(uuid.uuid4())
        self.store.create_run(self.run_id, ONE_STEP, {})
        self.store.start_run(self.run_id, "w@test")
        self.store.start_step(self.run_id, "only", 1, "w@test")
        self.said = 0

    def say(self, n: int = 1) -> None:
        for _ in range(n):
            self.said += 1
            message = {"message": f"line {self.said}"}
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
    with serve(app_factory(redis_url=quiet.redis_url)) as live:
        yield live


@pytest.fixture
def proxy(server: LiveServer) -> Iterator[CuttingProxy]:
    cutter = CuttingProxy(int(server.url.rsplit(":", 1)[1]))
    yield cutter
    cutter.close()


class Reader:
    """A follower read in a thread, as a program would; `events` fill as they come."""

    def __init__(self, follower: Follower) -> None:
        self.follower = follower
        self.events: list[Event] = []
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for event in self.follower:
                self.events.append(event)
        except Exception as exc:
            self.error = exc

    def wait(self, count: int) -> None:
        wait_for(lambda: len(self.events) >= count, what=f"{count} events")

    def join(self) -> None:
        self._thread.join(timeout=30)
        assert not self._thread.is_alive(), "the follower did not end"


def following(url: str, run_id: str, transport: str, **options: Any) -> Follower:
    options = {"backoff": Backoff(first=0.02, most=0.2), "retry_for": 20.0, **options}
    return Follower(url, run_id, "ws" if transport == "ws" else "sse", **options)


def assert_each_once_in_order(events: list[Event], stored: list[str]) -> None:
    assert [e["id"] for e in events] == stored
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["type"] == "run_finished"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_connections_cut_mid_run_lose_and_repeat_nothing(
    quiet: Settings, proxy: CuttingProxy, transport: str
) -> None:
    run = Run(quiet)
    said: list[str] = []
    reader = Reader(following(proxy.url, run.run_id, transport, on_retry=said.append))
    run.say(3)
    reader.wait(6)  # queued, started, step started, three lines
    proxy.cut()
    run.say(5)  # said while the follower reconnects: replayed to it from its cursor
    wait_for(lambda: reader.follower.connections >= 2, what="a second connection")
    reader.wait(11)
    run.say(300)
    proxy.cut()  # with events in flight: those not yet read are asked for again
    run.say(5)
    run.finish()
    reader.join()
    assert reader.error is None, reader.error
    assert_each_once_in_order(reader.events, run.ids())
    follower = reader.follower
    assert follower.finished and follower.cut_short >= 2 and follower.cursor.repeats == 0
    assert len(said) == follower.cut_short and all(" reconnecting after " in s for s in said)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_real_run_followed_across_a_dropped_connection(
    live_server: LiveServer, worker: WorkerProcess, r: Any, transport: str
) -> None:
    cutter = CuttingProxy(int(live_server.url.rsplit(":", 1)[1]))
    try:
        with Api(live_server.url) as api:
            run = api.submit("test_slow_progress", {"seconds": 1.0})
        reader = Reader(following(cutter.url, run["run_id"], transport))
        wait_for(
            lambda: any(e["type"] == "step_progress" for e in reader.events),
            what="the long step's progress",
        )
        cutter.cut()
        reader.join()
    finally:
        cutter.close()
    assert reader.error is None, reader.error
    events_until_finished(r, run["run_id"])
    stored = [entry_id for entry_id, _ in r.xrange(keys.run_events(run["run_id"]))]
    assert_each_once_in_order(reader.events, stored)
    assert reader.follower.cut_short >= 1
    assert reader.events[-1]["status"] == "succeeded"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_events_trimmed_while_away_are_a_cursor_expired_never_a_gap(
    quiet: Settings, proxy: CuttingProxy, transport: str
) -> None:
    run = Run(replace(quiet, event_maxlen=10))
    reader = Reader(following(proxy.url, run.run_id, transport))
    reader.wait(3)  # queued, started, step started
    proxy.refusing = True
    proxy.cut()
    wait_for(lambda: reader.follower.cut_short >= 2, what="the follower kept away")
    run.say(400)  # `MAXLEN ~` trims whole nodes of the stream: the cursor's are gone
    run.finish()
    proxy.refusing = False
    reader.join()
    assert isinstance(reader.error, CursorExpired), reader.error
    assert (reader.error.status, reader.error.code) == (410, "cursor_expired")
    assert "trimmed" in reader.error.message
    assert [e["seq"] for e in reader.events] == [1, 2, 3]  # nothing after the gap


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_finished_run_is_replayed_then_ends_and_at_its_end_ends_at_once(
    quiet: Settings, server: LiveServer, transport: str
) -> None:
    run = Run(quiet)
    run.say(2)
    run.finish()
    ids = run.ids()
    whole = following(server.url, run.run_id, transport)
    assert [e["id"] for e in whole] == ids and whole.finished and whole.connections == 1
    tail = following(server.url, run.run_id, transport, after=ids[2])
    assert [e["id"] for e in tail] == ids[3:]
    # At run_finished: SSE answers 204, the WebSocket closes with 1000 at once.
    at_end = following(server.url, run.run_id, transport, after=ids[-1])
    assert list(at_end) == []
    assert at_end.ended and not at_end.finished and at_end.connections == 1


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_refusals_are_errors_at_once(quiet: Settings, server: LiveServer, transport: str) -> None:
    run = Run(quiet)
    unknown = following(server.url, "no-such-run", transport)
    with pytest.raises(ApiError) as raised:
        list(unknown)
    assert raised.value.status == 404 and unknown.connections == 1
    last_ms = int(run.ids()[-1].split("-")[0])
    beyond = following(server.url, run.run_id, transport, after=f"{last_ms + 3_600_000}-0")
    with pytest.raises(ApiError) as raised:
        list(beyond)
    assert raised.value.status == 400 and "beyond the last event" in str(raised.value)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_server_that_stays_away_is_given_up_on(
    quiet: Settings, proxy: CuttingProxy, transport: str
) -> None:
    run = Run(quiet)
    reader = Reader(following(proxy.url, run.run_id, transport, retry_for=0.5))
    reader.wait(3)
    proxy.refusing = True
    proxy.cut()
    reader.join()
    assert isinstance(reader.error, GaveUp), reader.error
    assert "no stream for 0.5 s" in str(reader.error)
