"""The indexes beside the runs, and how runs leave them when their keys expire.

Runs are indexed by creation time (`stepstream:runs`), by status, by scenario and by
both, kept by the same scripts that change a run's status; and by id, for finding a run
by the start of its id, kept by the searches (`id_index`). A run's keys expire on
their own (`STEPSTREAM_RUN_TTL_S`); its index entries are dropped as they are found
expired: a few by every new run, and any that a listing meets. Nothing walks every
run in the background. Runs of an earlier version, made before some index existed,
join them once per Redis (`reindex`).
"""

from __future__ import annotations

from typing import Any, cast

from . import id_index, keys, listing
from .redis_client import backend_errors
from .scripts import StorePart
from .statuses import RUN_STATUSES, ScriptOutcome

#: The version of the listing and watch indexes this code keeps (see `reindex`).
INDEXES_VERSION = 2
#: How many old index entries each new run checks for expiry, so the index shrinks as
#: fast as it grows without any background job.
SWEEP_BATCH = 10


class RunIndex(StorePart):
    """The store's indexes and their upkeep (see `store.RunStore`)."""

    def _forget_older_than(self, created_us: int) -> None:
        # Runs created longer ago than the TTL may have expired: check a few of them, so
        # the indexes shrink as fast as they grow without any background job. (Scores
        # are microseconds, so that runs created in the same millisecond still list in
        # order; a double holds them exactly until the year 2255.)
        horizon = created_us - self.settings.run_ttl_s * 1_000_000
        old = cast(
            "list[str]",
            self._redis.zrangebyscore(keys.runs_index(), "-inf", horizon, start=0, num=SWEEP_BATCH),
        )
        if old:
            self.forget_expired(old)

    @backend_errors
    def forget_expired(self, run_ids: list[str]) -> None:
        """Drop from the indexes the runs whose keys have expired."""
        pipe = self._redis.pipeline(transaction=False)
        for run_id in run_ids:
            pipe.exists(keys.run(run_id))
        gone = [r for r, alive in zip(run_ids, pipe.execute(), strict=True) if not alive]
        if gone:
            self._unindex(gone)

    def _unindex(self, run_ids: list[str]) -> None:
        scenarios = cast("list[str | None]", self._redis.hmget(keys.scenario_of(), run_ids))
        pipe = self._redis.pipeline(transaction=False)
        pipe.zrem(keys.runs_index(), *run_ids)
        for status in RUN_STATUSES:
            pipe.zrem(keys.runs_by_status(status), *run_ids)
        for run_id, scenario_id in zip(run_ids, scenarios, strict=True):
            if scenario_id is None:
                continue
            pipe.zrem(keys.runs_by_scenario(scenario_id), run_id)
            for status in RUN_STATUSES:
                pipe.zrem(keys.runs_by_scenario(scenario_id, status), run_id)
        pipe.hdel(keys.scenario_of(), *run_ids)
        pipe.zrem(keys.run_ids(), *run_ids)
        pipe.zrem(keys.owed_dispatches(), *run_ids)
        pipe.execute()

    @backend_errors
    def withdraw_runs(self, run_ids: list[str]) -> bool:
        """Delete runs whose roots may or may not have reached the broker, all or none:
        True when none had started (a root that arrived finds no run), False when one
        had (their roots arrived: the runs go on). See withdraw_runs.lua."""
        run_keys = [key for run_id in run_ids for key in keys.run_keys(run_id)]
        withdrawn = int(self._scripts["withdraw_runs"](keys=run_keys, args=run_ids)) == 1
        if withdrawn:
            self._unindex(run_ids)
        return withdrawn

    @backend_errors
    def delete_run(self, run_id: str) -> None:
        """Undo a run that could not be enqueued, so nothing is left half-created."""
        self._redis.delete(*keys.run_keys(run_id))
        self._unindex([run_id])

    @backend_errors
    def reindex(self, page: int = 500) -> int:
        """Put every run into the listing and watch indexes, once per Redis: runs created
        before those existed are listed by status and scenario, and their attempts in
        flight are watched like any other. Returns how many runs it looked at (0 when
        done before)."""
        if self._redis.exists(keys.indexes_version()):
            return 0
        seen = 0
        # ZSCAN returns every run present throughout, however the index changes meanwhile
        # (perhaps twice: reindexing is safe to repeat).
        batch: list[str] = []
        for run_id, _ in self._redis.zscan_iter(keys.runs_index(), count=page):
            batch.append(cast(str, run_id))
            if len(batch) == page:
                self._reindex_runs(batch)
                seen, batch = seen + len(batch), []
        self._reindex_runs(batch)
        self._redis.set(keys.indexes_version(), INDEXES_VERSION)
        return seen + len(batch)

    @backend_errors
    def reindex_legacy(self) -> int:
        """Index the unfinished runs that nodes of an earlier version keep in their own
        set, during a rolling upgrade: their new runs and new attempts are watched and
        listed like any other. Returns how many are still unfinished there."""
        run_ids = sorted(cast("set[str]", self._redis.smembers(keys.legacy_active_runs())))
        if not run_ids:
            return 0
        done = [
            run_id
            for run_id, verdict in zip(run_ids, self._reindex_runs(run_ids), strict=True)
            if verdict != ScriptOutcome.INDEXED
        ]
        if done:
            self._redis.srem(keys.legacy_active_runs(), *done)
        return len(run_ids) - len(done)

    def _reindex_runs(self, run_ids: list[str]) -> list[str]:
        pipe = self._redis.pipeline(transaction=False)
        for run_id in run_ids:
            self._scripts["reindex_run"](keys=keys.run_keys(run_id), args=[], client=pipe)
        return cast("list[str]", pipe.execute()) if run_ids else []

    @backend_errors
    def list_runs(
        self,
        *,
        status: str | None = None,
        scenario_id: str | None = None,
        limit: int = 50,
        before: str | None = None,
        run_id: str | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Newest first, without inputs; the page and the `before` cursor of the next one.

        `run_id` keeps the runs whose id starts with it (`id_index.id_prefix`).
        """
        if run_id is not None:
            return id_index.list_by_prefix(
                self._redis,
                self._unindex,
                run_id,
                index=listing.index_for(status, scenario_id),
                limit=limit,
                before=before,
            )
        return listing.list_runs(
            self._redis,
            self._unindex,
            status=status,
            scenario_id=scenario_id,
            limit=limit,
            before=before,
        )

    @backend_errors
    def index_score(self, run_id: str) -> float | None:
        return self._redis.zscore(keys.runs_index(), run_id)
