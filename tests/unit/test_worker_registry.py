"""Classifying heartbeat rows: ok, stale, unknown, forgotten, refused."""

from __future__ import annotations

import json

from tasks.workers import FORGET_AFTER_S, read_registry

NOW = 1_800_000_000.0


def row(name: str, age_s: float, **fields: object) -> tuple[str, str]:
    return name, json.dumps({"name": name, "last_heartbeat": NOW - age_s, **fields})


def test_statuses_follow_three_heartbeat_intervals() -> None:
    rows = dict(
        [
            row("fresh@h", 1, active_runs=2, processed=7, pid=11),
            row("edge@h", 30),
            row("quiet@h", 31),
        ]
    )
    registry = read_registry(rows, now=NOW, heartbeat_s=10, expected=["fresh@h", "ghost@h"])
    by_name = {w["name"]: w for w in registry.workers}
    assert [w["name"] for w in registry.workers] == ["edge@h", "fresh@h", "ghost@h", "quiet@h"]
    assert by_name["fresh@h"]["status"] == "ok" and by_name["edge@h"]["status"] == "ok"
    assert by_name["quiet@h"]["status"] == "stale"
    assert by_name["ghost@h"] == {
        "name": "ghost@h",
        "status": "unknown",
        "last_heartbeat": None,
        "seconds_since": None,
        "active_runs": 0,
        "processed": 0,
        "queues": None,
        "concurrency": None,
        "busy": 0,
        "current_steps": [],
        "extra": {},
    }
    fresh = by_name["fresh@h"]
    assert (fresh["active_runs"], fresh["processed"], fresh["extra"]) == (2, 7, {"pid": 11})
    assert fresh["seconds_since"] == 1 and fresh["last_heartbeat"].startswith("2027-01-15T")
    assert registry.alive == 2 and registry.forget == []


def test_long_silent_and_foreign_rows_are_forgotten_not_listed() -> None:
    rows = dict([row("old@h", FORGET_AFTER_S + 1), row("ok@h", 0)])
    rows["no-at-sign"] = json.dumps({"name": "no-at-sign", "last_heartbeat": NOW})
    rows["bad@json"] = "{"
    rows["liar@h"] = json.dumps({"name": "other@h", "last_heartbeat": NOW})
    rows["late@h"] = json.dumps({"name": "late@h", "last_heartbeat": "yesterday"})
    registry = read_registry(rows, now=NOW, heartbeat_s=10)
    assert [w["name"] for w in registry.workers] == ["ok@h"]
    assert sorted(registry.forget) == ["bad@json", "late@h", "liar@h", "no-at-sign", "old@h"]


def test_rows_no_worker_writes_are_forgotten_rather_than_break_the_listing() -> None:
    """Rows our workers never write (a heartbeat as a string, NaN, beyond any date, a
    count of Infinity or a string): refused like any foreign row, never a 500."""
    odd = {
        "string@h": {"last_heartbeat": str(NOW)},
        "nan@h": {"last_heartbeat": float("nan")},
        "future@h": {"last_heartbeat": 1e300},
        "negative@h": {"last_heartbeat": -1e300},
        "bool@h": {"last_heartbeat": True},
        "inf@h": {"last_heartbeat": NOW, "active_runs": float("inf")},
        "text@h": {"last_heartbeat": NOW, "processed": "7"},
        "list@h": [NOW],
    }
    rows = dict([row("ok@h", 0)])
    for name, fields in odd.items():
        body = {"name": name, **fields} if isinstance(fields, dict) else fields
        rows[name] = json.dumps(body)
    registry = read_registry(rows, now=NOW, heartbeat_s=10)
    assert [w["name"] for w in registry.workers] == ["ok@h"]
    assert sorted(registry.forget) == sorted(odd)
