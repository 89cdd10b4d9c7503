"""Thousands of subscribers on one web process as production runs it (gunicorn, gevent),
counted, not timed: each gets every event of its run once, in order, whether it follows
live from the start or joins in a storm of replays while others follow."""

from __future__ import annotations

import asyncio
import re
import threading
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import redis
from conftest import ONE_STEP as SCENARIO
from conftest import start_web, wait_for
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)

from client.sse import SSEDecoder
from tasks import keys
from tasks.config import Settings
from tasks.store import RunStore

pytestmark = pytest.mark.slow


class Runs:
    """Runs held at one running step, whose step the test makes talk."""

    def __init__(self, settings: Settings, count: int, history: int = 0) -> None:
        self.store = RunStore.from_settings(settings)
        self.run_ids = [str(uuid.uuid4()) for _ in range(count)]
        self.said = dict.fromkeys(self.run_ids, 0)
        self.store.create_runs([(run_id, SCENARIO, {}) for run_id in self.run_ids])
        for run_id in self.run_ids:
            self.store.start_run(run_id, "w@test")
            self.store.start_step(run_id, "only", 1, "w@test")
            self.say(run_id, history)

    def say(self, run_id: str, n: int = 1) -> None:
        if n:
            first = self.said[run_id] + 1
            batch = [("step_log", {"message": str(i)}, None, i) for i in range(first, first + n)]
            self.store.step_events(run_id, "only", 1, batch)  # type: ignore[arg-type]
            self.said[run_id] += n

    def finish(self) -> None:
        for run_id in self.run_ids:
            self.store.finish_step(run_id, "only", 1, "succeeded", "", "1")

    def close(self) -> None:
        self.store.close()


@pytest.fixture
def quiet(settings: Settings, base_env: dict[str, str], quiet_db: str) -> dict[str, Any]:
    """A store database no worker sweeps: these runs have a made-up holder."""
    return {
        "settings": replace(settings, redis_url=quiet_db),
        "env": base_env | {"STEPSTREAM_REDIS_URL": quiet_db},
    }


async def ws_ids(port: int, path: str) -> list[str]:
    """The ids of every event one WebSocket delivers until the server closes it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22)
    conn = WSConnection(ConnectionType.CLIENT)
    writer.write(conn.send(Request(host=f"127.0.0.1:{port}", target=path)))
    ids: list[str] = []
    text = ""
    try:
        while data := await reader.read(1 << 16):
            conn.receive_data(data)
            for event in conn.events():
                if isinstance(event, RejectConnection):
                    raise AssertionError(f"WebSocket refused: {event.status_code}")
                if isinstance(event, Ping):
                    writer.write(conn.send(event.response()))
                elif isinstance(event, TextMessage):
                    text += event.data
                    if event.message_finished:
                        ids.append(event_id(text))
                        text = ""
                elif isinstance(event, CloseConnection):
                    assert event.code == 1000, (event.code, event.reason)
                    writer.write(conn.send(event.response()))
                    return ids
                else:
                    assert isinstance(event, AcceptConnection)
    finally:
        writer.close()
    raise AssertionError("WebSocket ended without a Close")


async def sse_ids(port: int, path: str) -> list[str]:
    """The ids of every event one SSE response delivers until it ends."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22)
    writer.write(
        f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n".encode()
    )
    try:
        status = await reader.readline()
        assert b" 200 " in status, status
        while (await reader.readline()) not in (b"\r\n", b"\n", b""):
            pass
        decoder = SSEDecoder()
        ids = []
        while chunk := await reader.read(1 << 16):
            ids += [message.id for message in decoder.feed_bytes(chunk)]
        return ids
    finally:
        writer.close()


ID = re.compile(r'"id":"([0-9]+-[0-9]+)"\}$')


def event_id(text: str) -> str:
    found = ID.search(text)
    assert found, text
    return found.group(1)


def follow_all(port: int, jobs: list[tuple[str, str, str]]) -> dict[int, list[str]]:
    """Every job (run, transport, after) followed at once, in one asyncio loop; each
    job's event ids, by its index."""
    results: dict[int, list[str]] = {}

    async def one(i: int, run_id: str, transport: str, after: str) -> None:
        kind = "ws" if transport == "ws" else "events"
        path = f"/api/runs/{run_id}/{kind}?after={after}"
        results[i] = await (ws_ids if transport == "ws" else sse_ids)(port, path)

    async def everyone() -> None:
        await asyncio.gather(*(one(i, *job) for i, job in enumerate(jobs)))

    asyncio.run(everyone())
    return results


def subscribers(url: str) -> int:
    """Subscribers the web process counts, both transports."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    found = re.findall(r'^stepstream_stream_subscribers\{transport="\w+"\} ([0-9.]+)$', text, re.M)
    return int(sum(float(n) for n in found))


def in_background(target: Any, *args: Any) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["result"] = target(*args)
        except BaseException as exc:
            out["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def result_of(thread: threading.Thread, out: dict[str, Any]) -> Any:
    thread.join(timeout=300)
    assert not thread.is_alive(), "clients still following"
    if "error" in out:
        raise out["error"]
    return out["result"]


def stored_ids(r: redis.Redis, run_id: str) -> list[str]:
    entries = cast("list[tuple[str, Any]]", r.xrange(keys.run_events(run_id)))
    return [entry_id for entry_id, _ in entries]


def test_2000_subscribers_over_200_runs_each_get_every_event_once_in_order(
    quiet: dict[str, Any], tmp_path: Path
) -> None:
    runs = Runs(quiet["settings"], 200)
    web = start_web(quiet["env"], tmp_path, "web-2000")
    port = int(web.url.rsplit(":", 1)[1])
    jobs = [(r, "ws" if i % 2 else "sse", "0") for i in range(10) for r in runs.run_ids]
    r = redis.Redis.from_url(quiet["settings"].redis_url, decode_responses=True)
    try:
        thread, out = in_background(follow_all, port, jobs)
        wait_for(lambda: subscribers(web.url) == len(jobs), timeout=120, what="all following")
        for _ in range(5):  # appended while everyone follows, interleaved over runs
            for run_id in runs.run_ids:
                runs.say(run_id, 2)
        runs.finish()
        results = result_of(thread, out)
        for i, (run_id, _, _) in enumerate(jobs):
            assert results[i] == stored_ids(r, run_id), f"subscriber {i} of run {run_id}"
    finally:
        web.kill()
        runs.close()
        r.close()


def test_a_join_storm_of_500_replays_while_500_follow_live_gives_everyone_every_event_once(
    quiet: dict[str, Any], tmp_path: Path
) -> None:
    runs = Runs(quiet["settings"], 50, history=300)
    web = start_web(quiet["env"], tmp_path, "web-storm")
    port = int(web.url.rsplit(":", 1)[1])
    r = redis.Redis.from_url(quiet["settings"].redis_url, decode_responses=True)
    ends = {run_id: stored_ids(r, run_id)[-1] for run_id in runs.run_ids}
    transports = ("ws", "sse")
    followers = [(r_, transports[i % 2], ends[r_]) for i in range(10) for r_ in runs.run_ids]
    joiners = [(r_, transports[i % 2], "0") for i in range(10) for r_ in runs.run_ids]
    stop = threading.Event()

    def talk() -> int:
        rounds = 0
        while not stop.is_set() or rounds < 3:
            for run_id in runs.run_ids:
                runs.say(run_id)
            rounds += 1
        return rounds

    try:
        following, followed = in_background(follow_all, port, followers)
        wait_for(lambda: subscribers(web.url) == 500, timeout=120, what="followers following")
        writer, wrote = in_background(talk)
        joining, joined = in_background(follow_all, port, joiners)  # all at once
        wait_for(lambda: subscribers(web.url) == 1000, timeout=120, what="the joiners")
        stop.set()
        assert result_of(writer, wrote) >= 3
        runs.finish()
        for jobs, results in (
            (followers, result_of(following, followed)),
            (joiners, result_of(joining, joined)),
        ):
            for i, (run_id, _, after) in enumerate(jobs):
                ids = stored_ids(r, run_id)
                expected = ids[ids.index(after) + 1 :] if after != "0" else ids
                assert results[i] == expected, f"subscriber {i} of run {run_id} from {after}"
    finally:
        stop.set()
        web.kill()
        runs.close()
        r.close()
