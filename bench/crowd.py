"""Crowds of subscribers for the streaming bench, and the runs they follow.

Ten thousand connections are more than one asyncio process on these 2 cores can parse
on time, so a crowd is spread over client processes (`Crowd`), each an asyncio loop of
its share of WebSocket and SSE subscribers. The runs are made and fed straight through
the run store (`LiveRuns`), the scripts a worker calls, from a thread of the bench: a
thousand Celery tasks would only add a worker's load to the machine under test.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import resource
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from multiprocessing.connection import Connection
from typing import Any

import pydantic_core
import websockets

from client.follow import Cursor
from client.sse import SSEDecoder
from client.streams import ws_url

#: The type and message of the events the publisher appends: the ones whose latency counts.
TICK = ("step_log", "tick")
#: Handshakes one client process has in flight at once (gunicorn's backlog is 2048).
CONNECTING = 200


def raise_file_limit(want: int) -> str:
    """Raise this process's open-file limit (its children inherit it) towards `want`:
    the soft limit to the hard one, and the hard one too where allowed (root). Says
    what it got and what it could not raise."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    unlimited = resource.RLIM_INFINITY
    note = ""
    if hard != unlimited and hard < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
        except (ValueError, OSError) as exc:
            note = f"; could not raise the hard limit {hard} to {want}: {exc}"
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == unlimited else min(want, hard)
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            note += f"; could not raise the soft limit {soft} to {target}: {exc}"
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        note += f"; open files capped at {soft}, below the {want} wanted"
    return f"RLIMIT_NOFILE {soft} (hard {hard}) for the bench, its clients and servers{note}"


# -- the runs ----------------------------------------------------------------------------


class LiveRuns:
    """Runs held at one running step, fed `step_log` events by the bench.

    Made in a Redis database no worker sweeps (their holder is made up, which a
    sweeper would rightly take over as lost)."""

    def __init__(self, redis_url: str, count: int, history: int = 0) -> None:
        # Imported here: client processes import this module and need none of it.
        from tasks.config import Settings
        from tasks.scenario import parse_scenario
        from tasks.store import RunStore

        self.redis_url = redis_url
        self.store = RunStore.from_settings(Settings.from_env({"STEPSTREAM_REDIS_URL": redis_url}))
        scenario = parse_scenario(
            {
                "schema_version": "1",
                "scenario_id": "bench_crowd",
                "name": "Crowd",
                "steps": [{"name": "only", "tool": "echo"}],
            },
            {"echo"},
        )
        self.run_ids = [str(uuid.uuid4()) for _ in range(count)]
        self.said = dict.fromkeys(self.run_ids, 0)
        self.store.create_runs([(run_id, scenario, {}) for run_id in self.run_ids])
        for run_id in self.run_ids:
            self.store.start_run(run_id, "bench@crowd")
            self.store.start_step(run_id, "only", 1, "bench@crowd")
            if history:
                batch = [(TICK[0], {"message": "history"}, None, n) for n in range(1, history + 1)]
                self.store.step_events(run_id, "only", 1, batch)  # type: ignore[arg-type]
                self.said[run_id] = history

    def say(self, run_id: str, message: str = TICK[1]) -> None:
        self.said[run_id] += 1
        self.store.step_event(
            run_id, "only", 1, TICK[0], {"message": message}, number=self.said[run_id]
        )

    def publish(self, per_run_s: float, seconds: float, stop: threading.Event) -> None:
        """Each run says `per_run_s` ticks a second for `seconds`, the appends spread
        evenly over time and runs (not a burst of every run at once)."""
        slots = [r for _ in range(max(1, round(per_run_s * seconds))) for r in self.run_ids]
        interval = seconds / len(slots)
        started = time.monotonic()
        for i, run_id in enumerate(slots):
            if stop.is_set():
                return
            delay = started + i * interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self.say(run_id)

    def finish(self) -> None:
        for run_id in self.run_ids:
            self.store.finish_step(run_id, "only", 1, "succeeded", "", "1")

    def lengths(self) -> dict[str, int]:
        import redis

        from tasks import keys

        client = redis.Redis.from_url(self.redis_url)
        try:
            pipe = client.pipeline(transaction=False)
            for run_id in self.run_ids:
                pipe.xlen(keys.run_events(run_id))
            return dict(zip(self.run_ids, pipe.execute(), strict=True))
        finally:
            client.close()

    def close(self) -> None:
        self.store.close()


# -- the clients -------------------------------------------------------------------------


@dataclass
class Job:
    """One subscriber: a run, a transport, and where it starts."""

    run_id: str
    transport: str  # "ws" or "sse"
    after: str = "0"
    #: Events of the run at or before `after`: those it is not sent.
    skip: int = 0


@dataclass
class Outcome:
    """What one subscriber saw."""

    run_id: str
    skip: int = 0
    delivered: int = 0
    repeats: int = 0
    finished: bool = False
    error: str = ""
    opened: float = 0.0
    #: When the first tick appended after it opened arrived: the end of its replay.
    caught_up: float = 0.0
    #: (arrival time, latency in ms) of every tick appended after it opened.
    samples: list[tuple[float, float]] = field(default_factory=list)


class Crowd:
    """Subscribers spread over `processes` client processes; `go()` connects them all."""

    def __init__(self, base_url: str, jobs: list[Job], processes: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._pipes: list[Connection] = []
        self._procs = []
        shares = [jobs[i::processes] for i in range(processes)]
        for share in filter(None, shares):
            mine, theirs = ctx.Pipe()
            proc = ctx.Process(target=_client_process, args=(base_url, share, theirs), daemon=True)
            proc.start()
            self._pipes.append(mine)
            self._procs.append(proc)
        for pipe in self._pipes:
            if pipe.recv() != "ready":
                raise RuntimeError("a client process failed to start")

    def go(self) -> None:
        for pipe in self._pipes:
            pipe.send("go")

    def connected(self, timeout_s: float = 300) -> tuple[float, float]:
        """Waits until every subscriber is connected: when the first and the last opened."""
        firsts, lasts = [], []
        for pipe in self._pipes:
            if not pipe.poll(timeout_s):
                raise TimeoutError("client processes still connecting")
            first, last = pipe.recv()
            firsts.append(first)
            lasts.append(last)
        return min(firsts), max(lasts)

    def outcomes(self, timeout_s: float = 300) -> list[Outcome]:
        found: list[Outcome] = []
        for pipe in self._pipes:
            if not pipe.poll(timeout_s):
                raise TimeoutError("client processes still following")
            found += pipe.recv()
        for proc in self._procs:
            proc.join(timeout=30)
        return found

    def kill(self) -> None:
        for proc in self._procs:
            if proc.is_alive():
                proc.kill()


def _client_process(base_url: str, jobs: list[Job], pipe: Connection) -> None:
    pipe.send("ready")
    if pipe.recv() != "go":
        return
    outcomes = asyncio.run(_follow_all(base_url, jobs, pipe))
    pipe.send(outcomes)


async def _follow_all(base_url: str, jobs: list[Job], pipe: Connection) -> list[Outcome]:
    gate = asyncio.Semaphore(CONNECTING)
    outcomes = [Outcome(job.run_id, job.skip) for job in jobs]
    opened = 0
    all_open = asyncio.Event()

    async def one(job: Job, out: Outcome) -> None:
        nonlocal opened
        path = f"/api/runs/{job.run_id}/" + ("ws" if job.transport == "ws" else "events")
        path += f"?after={job.after}"
        follow = ws_events if job.transport == "ws" else sse_events
        await gate.acquire()
        held = True
        try:
            async for event, received in follow(base_url, path):
                if event is None:
                    out.opened = received
                    gate.release()
                    held = False
                    opened += 1
                    if opened == len(jobs):
                        all_open.set()
                    continue
                out.delivered += 1
                if event["type"] == "run_finished":
                    out.finished = True
                    return
                if event["type"] != TICK[0] or event.get("message") != TICK[1]:
                    continue
                appended = datetime.fromisoformat(event["ts"]).timestamp()
                if appended >= out.opened:
                    if not out.caught_up:
                        out.caught_up = received
                    out.samples.append((received, (received - appended) * 1000))
        except Exception as exc:  # reported with the figures
            out.error = f"{type(exc).__name__}: {exc}"
            if not out.opened:
                opened += 1
                if opened == len(jobs):
                    all_open.set()
        finally:
            if held:
                gate.release()

    tasks = [asyncio.ensure_future(one(job, out)) for job, out in zip(jobs, outcomes, strict=True)]
    await all_open.wait()
    stamps = [o.opened for o in outcomes if o.opened]
    pipe.send((min(stamps, default=0.0), max(stamps, default=0.0)))
    await asyncio.gather(*tasks)
    return outcomes


def parse(text: str | bytes) -> Any:
    """An event's JSON, read by pydantic-core's parser (a dependency of the project):
    a third of the CPU of `json.loads`, which was half of what a replaying client
    spent. The little it refuses that `json.loads` reads (lone surrogates, nesting
    deeper than 200) goes to `json.loads`."""
    try:
        return pydantic_core.from_json(text)
    except ValueError:
        return json.loads(text)


async def ws_events(base_url: str, path: str) -> Any:
    """A run's events over one WebSocket (asyncio), each checked by the client's
    resume bookkeeping (no repeat, no gap); `(None, t)` when connected."""
    cursor = Cursor()
    async with websockets.connect(
        ws_url(base_url) + path, max_size=None, open_timeout=120, ping_interval=None
    ) as ws:
        yield None, time.time()  # connected
        async for message in ws:
            event, received = parse(message), time.time()
            if cursor.accept(event["id"], event.get("seq"), event["type"]):
                yield event, received


async def sse_events(base_url: str, path: str) -> Any:
    """The same over SSE."""
    cursor = Cursor()
    async for messages, received in raw_sse(base_url, path):
        if messages is None:
            yield None, received
            continue
        for message in messages:
            event = parse(message.data)
            if cursor.accept(message.id, event.get("seq"), event["type"]):
                yield event, received


async def raw_sse(base_url: str, path: str) -> Any:
    """A minimal asyncio SSE client, for thousands at once: HTTP/1.0, so the body is the
    stream as it is until the end, parsed by the client's decoder (client/sse.py).
    Yields the messages each read completes, with the time their bytes arrived (a list
    per read, not a message at a time: a replay of a hundred thousand events would
    spend as much in the generator's hops as in parsing); `(None, t)` when connected."""
    hostport = base_url.split("//", 1)[1]
    hostname, port = hostport.split(":")
    reader, writer = await asyncio.open_connection(hostname, int(port), limit=1 << 22)
    writer.write(
        f"GET {path} HTTP/1.0\r\nHost: {hostport}\r\nAccept: text/event-stream\r\n\r\n".encode()
    )
    try:
        status = await reader.readline()
        if b" 200 " not in status:
            raise RuntimeError(f"SSE refused: {status.decode(errors='replace').strip()}")
        while (await reader.readline()) not in (b"\r\n", b"\n", b""):
            pass  # the headers
        yield None, time.time()  # connected
        decoder = SSEDecoder()
        while True:
            chunk = await reader.read(1 << 16)
            received = time.time()
            messages = decoder.feed_bytes(chunk)
            if messages:
                yield messages, received
            if not chunk:
                return
    finally:
        writer.close()


def samples_between(outcomes: list[Outcome], start: float, end: float) -> Iterator[float]:
    for out in outcomes:
        for received, latency in out.samples:
            if start <= received < end:
                yield latency


def timeline(outcomes: list[Outcome], step_s: float = 1.0) -> str:
    """Latency over time (p50/p99/max by `step_s` of arrival), for reading a figure."""
    samples = sorted(sample for o in outcomes for sample in o.samples)
    if not samples:
        return ""
    start = samples[0][0]
    buckets: dict[int, list[float]] = {}
    for received, latency in samples:
        buckets.setdefault(int((received - start) / step_s), []).append(latency)
    lines = []
    for i, values in sorted(buckets.items()):
        values.sort()
        p50, p99 = values[len(values) // 2], values[int(0.99 * (len(values) - 1))]
        lines.append(
            f"{i * step_s:6.1f}s n={len(values):6d} p50={p50:8.1f} p99={p99:8.1f} "
            f"max={values[-1]:8.1f}"
        )
    return "\n".join(lines)
