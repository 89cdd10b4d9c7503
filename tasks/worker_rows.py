"""The worker registry in Redis, `stepstream:workers`: one row per worker node, written
by its heartbeat and read by the web (`GET /api/workers`, `/readyz`) and the sweeper.

Rows are JSON objects stamped with Redis' clock, and read together with that clock, so
hosts whose clocks disagree judge a worker's age the same way. What a row means is
`tasks/workers.py`'s concern (pure, tested without Redis); here it is stored and read.
"""

from __future__ import annotations

import json
from typing import Any, cast

import redis

from . import keys, redis_client
from .redis_client import backend_errors
from .watch import time_seconds

#: Writes a worker's row with `last_heartbeat` from Redis' clock.
#: KEYS[1] the registry hash; ARGV[1] the worker's name; ARGV[2] the rest of the row's
#: JSON object, after its opening brace.
BEAT = """
local t = redis.call('TIME')
local now = string.format('%d.%06d', tonumber(t[1]), tonumber(t[2]))
redis.call('HSET', KEYS[1], ARGV[1], '{"last_heartbeat":' .. now .. ',' .. ARGV[2])
"""


class WorkerRows:
    """Reads and writes the registry; every failure of Redis is `BackendUnavailable`."""

    def __init__(self, client: redis.Redis) -> None:
        self._redis = client
        self._beat = client.register_script(BEAT)

    @classmethod
    def connect(cls, redis_url: str, client_name: str) -> WorkerRows:
        """On a client of its own (a worker's heartbeat must not queue behind its steps)."""
        return cls(redis_client.connect(redis_url, client_name=client_name))

    def close(self) -> None:
        self._redis.close()

    @backend_errors
    def beat(self, name: str, row: dict[str, Any]) -> None:
        """Write worker `name`'s row, `last_heartbeat` added from Redis' clock."""
        self._beat(keys=[keys.workers()], args=[name, json.dumps(row)[1:]])

    @backend_errors
    def remove(self, name: str) -> None:
        self._redis.hdel(keys.workers(), name)

    @backend_errors
    def read(self) -> tuple[dict[str, str], float]:
        """Every row (name -> JSON), and Redis' time now, in seconds, to judge them by."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.hgetall(keys.workers())
        pipe.time()
        rows, time_reply = pipe.execute()
        return cast("dict[str, str]", rows), time_seconds(time_reply)

    @backend_errors
    def forget(self, names: list[str]) -> None:
        """Remove the rows of these workers (gone for long, or not a worker's)."""
        if names:
            self._redis.hdel(keys.workers(), *names)
