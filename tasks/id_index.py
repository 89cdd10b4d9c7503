"""Finding runs by the start of their id: the id index and the listing it answers.

The listing indexes are ordered by creation time, so a prefix of an id cannot be looked
up in them. The id index is a sorted set whose members all score 0, so Redis orders them
by id: `ZRANGEBYLEX` finds every id with a prefix in O(log N + M). The scripts that
create runs do not write it: it is brought up to date from the creation-time index when
a search needs it, by the runs created since the last search (a watermark of creation
time), so each run is added about once. It loses runs as the other indexes do
(`RunIndex._unindex`).

A search reads at most `MAX_MATCHES` ids: a prefix matching more (four hex digits match
one run in 65,536) is refused rather than read in full.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, cast

import redis

from . import keys
from .errors import InvalidRequest
from .views import LISTED_FIELDS, ListedRun

#: Run ids are UUIDs in their canonical text form.
ID_SHAPE = "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"
HEX = frozenset("0123456789abcdef")
#: The shortest prefix searched for: shorter ones match too much to be a search.
MIN_PREFIX = 4
#: The most ids a search reads; a prefix matching more is refused (400).
MAX_MATCHES = 1000
#: Entries of the creation-time index copied per round trip.
SYNC_BATCH = 1000
#: How far before its watermark each catch-up reads again (microseconds): runs are
#: scored by Redis' clock as their script runs, so only a clock stepped back can create
#: a run below the watermark.
SYNC_OVERLAP_US = 1_000_000

PREFIX_RULE = (
    f"run_id must be from {MIN_PREFIX} to {len(ID_SHAPE)} characters of a run id: hex "
    "digits, with dashes where a run id has them (8-4-4-4-12)"
)
_SHAPE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def id_prefix(raw: str) -> str:
    """`raw` as a run id prefix (lower case), or InvalidRequest."""
    prefix = raw.strip().lower()
    fits = MIN_PREFIX <= len(prefix) <= len(ID_SHAPE) and all(
        c == "-" if shape == "-" else c in HEX for c, shape in zip(prefix, ID_SHAPE, strict=False)
    )
    if not fits:
        raise InvalidRequest(PREFIX_RULE)
    return prefix


def catch_up(client: redis.Redis) -> int:
    """Add to the id index the runs created since it was last brought up to date.

    Costs one read of the watermark and one range read of the creation-time index per
    `SYNC_BATCH` runs created since (the first time: every run, once). Returns how many
    ids it (re)added. Safe to run concurrently: adding an id twice changes nothing.
    """
    synced = cast("str | None", client.get(keys.run_ids_synced()))
    low: float | str = "-inf" if synced is None else float(synced) - SYNC_OVERLAP_US
    added, skip = 0, 0
    while True:
        batch = cast(
            "list[tuple[str, float]]",
            client.zrangebyscore(
                keys.runs_index(), low, "+inf", start=skip, num=SYNC_BATCH, withscores=True
            ),
        )
        if not batch:
            return added
        pipe = client.pipeline(transaction=False)
        pipe.zadd(keys.run_ids(), dict.fromkeys((run_id for run_id, _ in batch), 0))
        pipe.set(keys.run_ids_synced(), repr(batch[-1][1]))
        pipe.execute()
        added += len(batch)
        if len(batch) < SYNC_BATCH:
            return added
        # On from the last score, past the runs of that score already read (runs may
        # share a score, and more of them may follow).
        last = batch[-1][1]
        ties = sum(1 for _, score in batch if score == last)
        skip = skip + ties if low == last else ties
        low = last


def list_by_prefix(
    client: redis.Redis,
    forget: Callable[[list[str]], None],
    prefix: str,
    *,
    index: str,
    limit: int,
    before: str | None,
) -> tuple[list[dict[str, Any]], str | None]:
    """The runs of `index` whose id starts with `prefix`, newest first, as
    `listing.list_runs` pages them: the page and the `before` cursor of the next one.

    Cost: the catch-up, one `ZRANGEBYLEX` (O(log N + M), M ≤ `MAX_MATCHES`), one
    `ZMSCORE` of the M ids in each of the creation-time index and `index`, and one
    pipelined `HMGET` per run read.
    """
    if _SHAPE.fullmatch(prefix):
        candidates = [prefix]  # a whole id: no need of the id index
    else:
        catch_up(client)
        candidates = cast(
            "list[str]",
            client.zrangebylex(keys.run_ids(), f"[{prefix}", f"({prefix}\x7f", 0, MAX_MATCHES + 1),
        )
        if len(candidates) > MAX_MATCHES:
            raise InvalidRequest(
                f"more than {MAX_MATCHES} runs have an id starting with {prefix!r}: "
                "give more of the id"
            )
    if not candidates:
        return [], None
    pipe = client.pipeline(transaction=False)
    pipe.zmscore(keys.runs_index(), candidates)
    pipe.zmscore(index, candidates)
    if before is not None:
        pipe.zscore(keys.runs_index(), before)
    created, in_index, *rest = pipe.execute()
    unindexed = [r for r, score in zip(candidates, created, strict=True) if score is None]
    if unindexed and not _SHAPE.fullmatch(prefix):
        client.zrem(keys.run_ids(), *unindexed)
    scored = zip(candidates, in_index, strict=True)
    matches = sorted(((s, r) for r, s in scored if s is not None), reverse=True)
    if before is not None:
        if rest[0] is None:
            return [], None
        matches = [(s, r) for s, r in matches if (s, r) < (rest[0], before)]
    return _read_page(client, forget, [r for _, r in matches], limit)


def _read_page(
    client: redis.Redis, forget: Callable[[list[str]], None], run_ids: list[str], limit: int
) -> tuple[list[dict[str, Any]], str | None]:
    runs: list[dict[str, Any]] = []
    for start in range(0, len(run_ids), limit + 1):
        chunk = run_ids[start : start + limit + 1]
        pipe = client.pipeline(transaction=False)
        for run_id in chunk:
            pipe.hmget(keys.run(run_id), LISTED_FIELDS)
        expired = []
        for run_id, values in zip(chunk, pipe.execute(), strict=True):
            if values[0] is None:
                expired.append(run_id)
            else:
                runs.append(ListedRun.from_values(values).model_dump())
        if expired:
            forget(expired)
        if len(runs) > limit:
            return runs[:limit], runs[limit - 1]["run_id"]
    return runs, None
