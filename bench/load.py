"""The load generator of the production-shaped benchmarks, run in a process of its own.

A minimal asyncio HTTP/1.1 client: each connection is kept alive and sends its share of
the requests one after the other, the bodies encoded before the clock starts. httpx
would cost the client several times the CPU of the server it measures, and every
process here shares the same cores.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Load:
    """What a client process did: its clock (time.monotonic, the same in every process
    of the host) when it started and ended, and the run ids it was answered."""

    started: float
    ended: float
    run_ids: list[str]


def post_all(url: str, path: str, bodies: list[bytes], connections: int) -> Load:
    """POST every body to `url + path` over `connections` keep-alive connections; each
    answer must be 202 with a run summary (`run_id`) or a batch (`runs`)."""
    return asyncio.run(_post_all(url, path, bodies, connections))


async def _post_all(url: str, path: str, bodies: list[bytes], connections: int) -> Load:
    hostport = url.split("//", 1)[1]
    host, port = hostport.split(":")
    streams = [await asyncio.open_connection(host, int(port)) for _ in range(connections)]
    shares = [bodies[i::connections] for i in range(connections)]
    started = time.monotonic()
    answers = await asyncio.gather(
        *(_post_many(reader, writer, hostport, path, share) for (reader, writer), share in
          zip(streams, shares, strict=True))
    )  # fmt: skip
    ended = time.monotonic()
    for _, writer in streams:
        writer.close()
    return Load(started, ended, [run_id for answer in answers for run_id in answer])


async def _post_many(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    hostport: str,
    path: str,
    bodies: list[bytes],
) -> list[str]:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {hostport}\r\nContent-Type: application/json\r\n"
        "Content-Length: "
    ).encode()
    run_ids: list[str] = []
    for body in bodies:
        writer.write(head + str(len(body)).encode() + b"\r\n\r\n" + body)
        status, answer = await _response(reader)
        if status != 202:
            raise RuntimeError(f"POST {path} answered {status}: {answer[:500]!r}")
        run_ids += _run_ids(json.loads(answer))
    return run_ids


async def _response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    status_line = await reader.readline()
    status = int(status_line.split()[1])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, await reader.readexactly(length)


def _run_ids(answer: Any) -> list[str]:
    if "runs" in answer:
        return [str(run["run_id"]) for run in answer["runs"]]
    return [str(answer["run_id"])]
