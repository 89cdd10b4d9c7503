"""The worker registry, read: heartbeat rows turned into statuses (SPEC §8).

Pure: it is given the rows and the clock, so it is tested without Redis or Celery.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

#: A worker is `ok` while heard from within this many heartbeat intervals.
STALE_AFTER_INTERVALS = 3
#: Workers silent this long are dropped from the registry.
FORGET_AFTER_S = 24 * 3600
#: Celery node names are `name@host`, and Celery accepts almost anything in either part
#: (spaces, Unicode, more `@`): a row is a worker's if its name has an `@` and no
#: control character. A worker whose row were refused would look dead to the sweeper.
NODE_NAME = re.compile(r"^[^\x00-\x1f\x7f]{1,500}$")
#: Set by a worker node's main process when it starts, inherited by its pool children:
#: a node restarted under the same name is a new incarnation, and the attempts the old
#: one held are known to be lost without waiting for it to look stale.
INCARNATION_ENV = "STEPSTREAM_WORKER_INCARNATION"


def incarnation() -> str:
    """This worker node's incarnation, or "" outside a worker."""
    return os.environ.get(INCARNATION_ENV, "")


@dataclass(frozen=True)
class Registry:
    """What the registry holds now: the listing, and the rows old enough to forget."""

    workers: list[dict[str, Any]]
    forget: list[str]

    @property
    def alive(self) -> int:
        return sum(1 for w in self.workers if w["status"] == "ok")


def read_registry(
    rows: Mapping[str, str],
    *,
    now: float,
    heartbeat_s: float,
    expected: Iterable[str] = (),
) -> Registry:
    """Classify heartbeat rows (name -> JSON) as ok or stale, and add the expected
    workers never heard from as unknown."""
    workers: dict[str, dict[str, Any]] = {}
    forget: list[str] = []
    for name, raw in rows.items():
        row = _parse(name, raw)
        if row is None:
            forget.append(name)  # not a worker's heartbeat: never listed
            continue
        since = max(0.0, now - float(row["last_heartbeat"]))
        if since > FORGET_AFTER_S:
            forget.append(name)
            continue
        extra = {k: v for k, v in row.items() if k not in _LISTED}
        workers[name] = {
            "name": name,
            "status": "ok" if since <= STALE_AFTER_INTERVALS * heartbeat_s else "stale",
            "last_heartbeat": datetime.fromtimestamp(row["last_heartbeat"], UTC).isoformat(),
            "seconds_since": round(since, 3),
            "active_runs": int(row.get("active_runs", 0)),
            "processed": int(row.get("processed", 0)),
            "extra": extra,
        }
    for name in expected:
        workers.setdefault(
            name,
            {
                "name": name,
                "status": "unknown",
                "last_heartbeat": None,
                "seconds_since": None,
                "active_runs": 0,
                "processed": 0,
                "extra": {},
            },
        )
    return Registry([workers[name] for name in sorted(workers)], forget)


_LISTED = {"name", "last_heartbeat", "active_runs", "processed"}


def _parse(name: str, raw: str) -> dict[str, Any] | None:
    if "@" not in name or not NODE_NAME.fullmatch(name):
        return None
    try:
        row = json.loads(raw)
        float(row["last_heartbeat"])
        int(row.get("active_runs", 0))
        int(row.get("processed", 0))
    except (ValueError, TypeError, KeyError):
        return None
    if not isinstance(row, dict) or row.get("name", name) != name:
        return None
    return row
