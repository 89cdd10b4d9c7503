"""Runs as the API shows them: summaries, snapshots and pages of events.

A snapshot is read in one MULTI with the run's steps, so it always matches the stream
up to its `last_event_id`; a page of events is read together with the ends of the
stream, so a cursor is judged against what the same read returns.
"""

from __future__ import annotations

from typing import Any, cast

from . import keys, stream_reads
from .events import Event, Retained
from .redis_client import backend_errors
from .scripts import StorePart
from .views import SUMMARY_FIELDS, RunSnapshot, RunSummary


class RunReads(StorePart):
    """The store's reads of runs (see `store.RunStore`)."""

    @backend_errors
    def exists(self, run_id: str) -> bool:
        return bool(self._redis.exists(keys.run(run_id)))

    @backend_errors
    def status(self, run_id: str) -> str | None:
        """The run's status; None when it does not exist."""
        return cast("str | None", self._redis.hget(keys.run(run_id), "status"))

    @backend_errors
    def scenario_of(self, run_id: str) -> str | None:
        """The run's scenario_id; None when the run does not exist."""
        return cast("str | None", self._redis.hget(keys.run(run_id), "scenario_id"))

    @backend_errors
    def summary(self, run_id: str) -> dict[str, Any] | None:
        """The run's summary as the API sends it (see `views.RunSummary`)."""
        values = cast("list[str | None]", self._redis.hmget(keys.run(run_id), SUMMARY_FIELDS))
        summary = RunSummary.from_hash(dict(zip(SUMMARY_FIELDS, values, strict=True)))
        return None if summary is None else summary.model_dump()

    @backend_errors
    def snapshot(self, run_id: str) -> dict[str, Any] | None:
        """The run with its steps, consistent with the stream up to `last_event_id`, as
        the API sends it (see `views.RunSnapshot`)."""
        pipe = self._redis.pipeline(transaction=True)
        pipe.hgetall(keys.run(run_id))
        pipe.hgetall(keys.run_steps(run_id))
        run, steps = pipe.execute()
        snapshot = RunSnapshot.from_hashes(run, steps)
        return None if snapshot is None else snapshot.model_dump()

    @backend_errors
    def read_events(self, run_id: str, after: str, count: int) -> list[Event]:
        """Events strictly after stream id `after` ("0" for the beginning)."""
        return stream_reads.read_events(self._redis, run_id, after, count)

    @backend_errors
    def read_retained(
        self, run_id: str, page: tuple[str, int] | None = None
    ) -> tuple[bool, Retained, list[Event]]:
        """Whether the run exists, the ends of its stream, and (with `page`, an `after`
        id and a count) the events after that id, in one transaction (see
        `stream_reads.read_retained`)."""
        return stream_reads.read_retained(self._redis, run_id, page)
