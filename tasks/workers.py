"""The worker registry, read: heartbeat rows turned into statuses (SPEC §8), and what
they tell about the rest: why a run waits (`queued_reason`) and which tools need a
worker restarted (`tool_states`).

Pure: it is given the rows and the clock, so it is tested without Redis or Celery.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeGuard

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
    #: Each listed worker's report on its Python tools (`LoadedTools.report`), by name;
    #: workers of a version that sends none are left out.
    tools: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def alive(self) -> int:
        return sum(1 for w in self.workers if w["status"] == "ok")

    def live(self) -> list[dict[str, Any]]:
        """The workers heard from lately (`ok`), by name."""
        return [w for w in self.workers if w["status"] == "ok"]


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
    tools: dict[str, dict[str, Any]] = {}
    for name, raw in rows.items():
        row = _parse(name, raw)
        if row is None:
            forget.append(name)  # not a worker's heartbeat: never listed
            continue
        since = max(0.0, now - float(row["last_heartbeat"]))
        if since > FORGET_AFTER_S:
            forget.append(name)
            continue
        extra = {k: v for k, v in row.items() if k not in _NOT_EXTRA}
        workers[name] = {
            "name": name,
            "status": "ok" if since <= STALE_AFTER_INTERVALS * heartbeat_s else "stale",
            "last_heartbeat": datetime.fromtimestamp(row["last_heartbeat"], UTC).isoformat(),
            "seconds_since": round(since, 3),
            "active_runs": int(row.get("active_runs", 0)),
            "processed": int(row.get("processed", 0)),
            **_doing(row),
            "extra": extra,
        }
        if isinstance(row.get("tools"), dict):
            tools[name] = row["tools"]
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
                **_doing({}),
                "extra": {},
            },
        )
    return Registry([workers[name] for name in sorted(workers)], forget, tools)


#: Row fields listed as such, not in `extra` (`concurrency` stays there too, where
#: earlier versions listed it).
_NOT_EXTRA = {
    "name",
    "last_heartbeat",
    "active_runs",
    "processed",
    "queues",
    "busy",
    "current_steps",
    "tools",
}


def _doing(row: Mapping[str, Any]) -> dict[str, Any]:
    """What a worker consumes and runs, as listed: `queues` (None when its row does not
    say), `concurrency` (its slots; None when unknown), `busy` (slots in use) and
    `current_steps`. A row of an older version lacks them; a malformed value reads as
    unknown rather than hiding the worker."""
    queues = row.get("queues")
    if not (isinstance(queues, list) and all(isinstance(q, str) for q in queues)):
        queues = None
    concurrency = row.get("concurrency")
    if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 0:
        concurrency = None
    busy = row.get("busy")
    if not isinstance(busy, int) or isinstance(busy, bool) or busy < 0:
        busy = 0
    steps = row.get("current_steps")
    current = [
        {
            "run_id": s["run_id"],
            "step": str(s.get("step", "")),
            "attempt": s["attempt"] if isinstance(s.get("attempt"), int) else None,
            "started_at": _step_started_at(s, row.get("last_heartbeat")),
        }
        for s in (steps if isinstance(steps, list) else [])
        if isinstance(s, dict) and isinstance(s.get("run_id"), str)
    ]
    return {"queues": queues, "concurrency": concurrency, "busy": busy, "current_steps": current}


def _step_started_at(step: Mapping[str, Any], beat: Any) -> str | None:
    """When a worker took a step, on Redis' clock: its row's heartbeat (stamped by
    Redis) less how long the step had run then (`running_s`, measured on the worker's
    clock, whose errors cancel out in a difference). A row of an earlier version has
    only `started_at`, on the worker's clock, shown as it is."""
    running = step.get("running_s")
    if isinstance(running, int | float) and not isinstance(running, bool):
        with contextlib.suppress(ValueError, OverflowError, OSError, TypeError):
            if 0 <= running <= FORGET_AFTER_S:
                return datetime.fromtimestamp(float(beat) - running, UTC).isoformat()
    started = step.get("started_at")
    return started if isinstance(started, str) else None


def queued_reason(registry: Registry, queues: Iterable[str]) -> str | None:
    """Why work sent to `queues` (a queued run's start, its ready steps) waits, from the
    registry now: no live worker, no live worker consuming one of the queues (when the
    workers say which they consume), or every slot of those that do busy. None when a
    worker should be taking it (or the registry cannot tell).

    Slots are as of each worker's last heartbeat, so "busy" may lag a step that just
    ended by a beat (a worker beats again as soon as it starts or ends a task)."""
    live = registry.live()
    if not live:
        return "no live worker"
    wanted = sorted(set(queues))
    if all(w["queues"] is not None for w in live):
        for queue in wanted:
            if not any(queue in w["queues"] for w in live):
                return f"no worker consumes queue {queue}"
    consumers = [w for w in live if w["queues"] is None or set(w["queues"]) & set(wanted)]
    if any(w["concurrency"] is None for w in consumers):
        return None
    slots = sum(w["concurrency"] for w in consumers)
    if slots and sum(min(w["busy"], w["concurrency"]) for w in consumers) >= slots:
        return (
            f"all {slots} worker slot is busy"
            if slots == 1
            else f"all {slots} worker slots are busy"
        )
    return None


def waiting_queues(snapshot: Mapping[str, Any], default_queue: str) -> list[str] | None:
    """The queues a run's snapshot waits on a worker from: the default queue for a
    queued run (its start is sent there), those of its ready steps not yet started for
    a running one (a first attempt reads `pending` with `attempt` 1; a retry or a
    takeover, `running` with no record of its attempt yet); None when it waits on no
    worker."""
    status = snapshot.get("status")
    if status == "queued":
        return [default_queue]
    if status != "running":
        return None
    queues = [
        step.get("queue") or default_queue
        for step in snapshot.get("steps") or ()
        if isinstance(step, Mapping) and _ready(step)
    ]
    return queues or None


def _ready(step: Mapping[str, Any]) -> bool:
    attempt = step.get("attempt") or 0
    if step.get("status") == "pending":
        return bool(attempt >= 1)
    attempts = step.get("attempts")
    if step.get("status") != "running" or attempt < 2 or not isinstance(attempts, list):
        return False
    return not any(isinstance(a, Mapping) and a.get("attempt") == attempt for a in attempts)


#: The latest heartbeat a row may carry (the year 5138): past it, no date holds it.
MAX_HEARTBEAT = 1e11


def _parse(name: str, raw: str) -> dict[str, Any] | None:
    """A worker's heartbeat row, or None for anything our workers never write (a
    foreign key, bad JSON, a heartbeat that is not a time, counts that are not
    counts): such rows are forgotten, never listed, and never break the listing."""
    if "@" not in name or not NODE_NAME.fullmatch(name):
        return None
    try:
        row = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(row, dict) or row.get("name", name) != name:
        return None
    beat = row.get("last_heartbeat")
    if not _number(beat) or not 0 <= beat < MAX_HEARTBEAT:  # NaN fails both
        return None
    if not all(_count(row.get(key, 0)) for key in ("active_runs", "processed")):
        return None
    return row


def _number(value: Any) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def tool_states(python: list[dict[str, Any]], registry: Registry) -> list[dict[str, Any]]:
    """The Python tools the web knows (`Tool.summary()`s), each with what the live
    workers say of it (see `tasks.tools.fingerprints`), and those only workers know.

    Every entry gains `loaded` (a live worker loaded it) and `restart_needed` with its
    `reason`: the tool's module changed on disk since a worker loaded it; no live worker
    loaded it (installed since they started, or it failed to load there); or a worker
    loaded a tool this web process never did (the web started before it appeared). An
    entry point installed since a worker started whose tools nobody has loaded is listed
    under its entry-point name, `loaded: false`. With no live worker reporting on its
    tools, nothing is said to need a restart."""
    reports = {w["name"]: registry.tools[w["name"]] for w in registry.live()}
    reports = {name: report for name, report in reports.items() if name in registry.tools}
    loaded_by: dict[str, list[str]] = {}
    changed_on: dict[str, list[str]] = {}
    added: dict[str, list[str]] = {}  # entry point name -> workers that found it new
    for worker, report in sorted(reports.items()):
        for name in _strings(report.get("loaded")):
            loaded_by.setdefault(name, []).append(worker)
        changed = report.get("changed")
        for module in changed if isinstance(changed, list) else ():
            if isinstance(module, dict):
                for name in _strings(module.get("tools")):
                    changed_on.setdefault(name, []).append(worker)
        for entry_point in _strings(report.get("added")):
            added.setdefault(entry_point, []).append(worker)
    added_names = {ep.split("=", 1)[0].strip(): workers for ep, workers in added.items()}

    def state(name: str, known_here: bool) -> dict[str, Any]:
        loaded = bool(loaded_by.get(name))
        reason = None
        if changed_on.get(name):
            reason = f"changed on disk since {_workers(changed_on[name])} started"
        elif reports and not loaded:
            if added_names.get(name):
                reason = f"new on disk since {_workers(added_names[name])} started"
            else:
                reason = f"loaded by no live worker ({_workers(sorted(reports), bare=True)})"
        elif not known_here:
            reason = (
                f"loaded by {_workers(loaded_by[name])} but not by the web server, "
                "which started before it appeared"
            )
        return {"loaded": loaded, "restart_needed": reason is not None, "reason": reason}

    known = {str(t["name"]) for t in python}
    entries = [{**t, **state(str(t["name"]), True)} for t in python]
    for name in sorted(set(loaded_by) - known):
        entries.append(_unknown_here(name, state(name, False)))
    for entry_point, workers in sorted(added.items()):
        name = entry_point.split("=", 1)[0].strip()
        if name in known or name in loaded_by:
            continue
        reason = f"new entry point `{entry_point}` on disk since {_workers(workers)} started"
        entries.append(
            _unknown_here(
                name,
                {"loaded": False, "restart_needed": True, "reason": reason},
                entry_point=entry_point,
            )
        )
    return entries


def _unknown_here(name: str, state: dict[str, Any], **more: str) -> dict[str, Any]:
    """An entry for a tool this web process has not loaded: it knows only the name."""
    return {
        "name": name,
        "description": "",
        "input_schema": {},
        "source": "python",
        "available": False,
        **more,
        **state,
    }


def _workers(names: list[str], bare: bool = False) -> str:
    listed = ", ".join(names)
    return listed if bare else f"worker {listed}" if len(names) == 1 else f"workers {listed}"


def _strings(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []
