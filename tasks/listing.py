"""Listing runs, newest first, filtered by status and scenario.

Each filter has its own index, kept by the same scripts that change a run's status
(lua/prelude.lua `index_status`), so a filtered page costs what an unfiltered one
does: one range read of the index and one pipelined read of the page's runs, however
many runs exist. Entries leave out `input` (a run's snapshot has it): a listing of
runs with large inputs stays small.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, cast

import redis

from . import keys
from .views import LISTED_FIELDS, ListedRun

#: Index entries read per round trip.
PAGE = 200


def index_for(status: str | None, scenario_id: str | None) -> str:
    if scenario_id is not None:
        return keys.runs_by_scenario(scenario_id, status)
    if status is not None:
        return keys.runs_by_status(status)
    return keys.runs_index()


def list_runs(
    client: redis.Redis,
    forget: Callable[[list[str]], None],
    *,
    status: str | None = None,
    scenario_id: str | None = None,
    limit: int = 50,
    before: str | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """Newest first; returns the page and the `before` cursor of the next one.

    `forget` is given the runs found expired on the way, to drop them from the indexes.
    """
    runs: list[dict[str, Any]] = []
    for listed in _walk(client, index_for(status, scenario_id), before, limit + 1, forget):
        runs.append(listed)
        if len(runs) == limit + 1:
            break
    if len(runs) > limit:
        return runs[:limit], runs[limit - 1]["run_id"]
    return runs, None


def _walk(
    client: redis.Redis,
    index: str,
    before: str | None,
    want: int,
    forget: Callable[[list[str]], None],
) -> Iterator[dict[str, Any]]:
    max_score: float | str = "+inf"
    before_score: float | None = None
    if before is not None:
        before_score = client.zscore(keys.runs_index(), before)
        if before_score is None:
            return
        max_score = before_score
    offset = 0
    while True:
        members = cast(
            "list[tuple[str, float]]",
            client.zrevrangebyscore(
                index, max_score, "-inf", start=offset, num=min(PAGE, want + 1), withscores=True
            ),
        )
        if not members:
            return
        offset += len(members)
        if before_score is not None:
            # Entries that list before `before`, or are it: its own score, ordered (in
            # reverse) by id. `before` need not be in this index: its status may have
            # changed since the page that named it.
            members = [(m, s) for m, s in members if s < before_score or m < cast(str, before)]
        pipe = client.pipeline(transaction=False)
        for run_id, _ in members:
            pipe.hmget(keys.run(run_id), LISTED_FIELDS)
        expired = []
        for (run_id, _), values in zip(members, pipe.execute(), strict=True):
            if values[0] is None:
                expired.append(run_id)
                continue
            yield ListedRun.from_values(values).model_dump()
        if expired:
            forget(expired)
            offset -= len(expired)
