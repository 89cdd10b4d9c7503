"""Reading the watch indexes: what runs now, what must have ended, what is owed.

The run scripts keep two sorted sets beside the runs (see lua/prelude.lua): running
attempts scored by the time by which each must have ended, and dispatches owed (a ready
step, a queued run's roots included; or the start of a queued run created by an earlier
version) scored by when they are sent again if nobody started them.
The sweeper reads these instead of walking every unfinished run, so its cost follows
what runs, not what exists. Every time here is Redis' clock: hosts' clocks may disagree.
The sweeper reads them through the store (`WatchReads`), under the store's short lock
that makes it one sweeper at a time across the cluster.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import redis

from . import keys
from .redis_client import backend_errors
from .scripts import StorePart


@dataclass(frozen=True)
class RunningAttempt:
    """One entry of the running-attempts index."""

    run_id: str
    step: str
    attempt: int
    #: When it started and by when it must have ended, in seconds of Redis' clock.
    started: float
    deadline: float
    #: The incarnation of the worker node that started it ("" if unknown).
    incarnation: str
    worker: str
    #: The entry as it is in the index.
    entry: str


@dataclass(frozen=True)
class OwedDispatch:
    """One entry of the owed-dispatches index: a ready step, or (`step` "") the start of
    a queued run created by an earlier version."""

    run_id: str
    step: str
    entry: str


def time_seconds(reply: tuple[int, int]) -> float:
    """Seconds since the epoch from the reply of Redis `TIME` (seconds, microseconds)."""
    seconds, micros = reply
    return seconds + micros / 1_000_000


def running_attempts(client: redis.Redis) -> list[RunningAttempt]:
    """Every running attempt, soonest deadline first."""
    entries = cast(
        "list[tuple[str, float]]",
        client.zrange(keys.running_attempts(), 0, -1, withscores=True),
    )
    return [a for a in (_running(e, s) for e, s in entries) if a is not None]


def _running(entry: str, score: float) -> RunningAttempt | None:
    parts = entry.split("\t", 5)
    if len(parts) != 6:
        return None
    run_id, step, attempt, started_ms, incarnation, worker = parts
    try:
        return RunningAttempt(
            run_id,
            step,
            int(attempt),
            int(started_ms) / 1000,
            score / 1000,
            incarnation,
            worker,
            entry,
        )
    except ValueError:
        return None


def owed_dispatches(client: redis.Redis, now: float, limit: int) -> list[OwedDispatch]:
    """Up to `limit` dispatches due by `now` (Redis time, seconds), oldest first."""
    entries = cast(
        "list[str]",
        client.zrangebyscore(keys.owed_dispatches(), "-inf", int(now * 1000), start=0, num=limit),
    )
    owed = []
    for entry in entries:
        run_id, _, step = entry.partition("\t")
        owed.append(OwedDispatch(run_id, step, entry))
    return owed


class WatchReads(StorePart):
    """The sweeper's reads of the watch indexes, and its lock (see `store.RunStore`)."""

    @backend_errors
    def take_sweeper_lock(self, holder: str, hold_ms: int) -> bool:
        """Whether `holder` may sweep now: nobody else swept in the last `hold_ms`."""
        return bool(self._redis.set(keys.sweeper_lock(), holder, nx=True, px=hold_ms))

    @backend_errors
    def running_attempts(self) -> list[RunningAttempt]:
        """Every running attempt, soonest deadline first."""
        return running_attempts(self._redis)

    @backend_errors
    def owed_dispatches(self, now: float, limit: int) -> list[OwedDispatch]:
        """Up to `limit` dispatches due by `now` (Redis time, seconds), oldest first."""
        return owed_dispatches(self._redis, now, limit)
