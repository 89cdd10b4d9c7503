"""What the registry tells beyond liveness: what each worker does, why a run waits, and
which tools need a worker restarted (tasks/workers.py, tasks/tools/fingerprints.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from tasks.tools import Tool, ToolRegistry, tool
from tasks.tools.fingerprints import LoadedTools
from tasks.workers import queued_reason, read_registry, tool_states, waiting_queues

NOW = 1_800_000_000.0


def registry(*rows: dict[str, Any], age_s: float = 1) -> Any:
    raw = {r["name"]: json.dumps({"last_heartbeat": NOW - age_s, **r}) for r in rows}
    return read_registry(raw, now=NOW, heartbeat_s=10)


def test_rows_list_queues_slots_and_steps_and_tolerate_older_or_odd_rows() -> None:
    step = {"run_id": "r1", "step": "s", "attempt": 2, "started_at": "2027-01-15T08:00:00+00:00"}
    listed = registry(
        {"name": "new@h", "queues": ["q"], "concurrency": 4, "busy": 1, "current_steps": [step]},
        {"name": "old@h", "pid": 3},
        {"name": "odd@h", "queues": "q", "concurrency": "4", "busy": -1, "current_steps": [7]},
    ).workers
    new, odd, old = listed
    assert (new["queues"], new["concurrency"], new["busy"]) == (["q"], 4, 1)
    assert new["current_steps"] == [step]
    assert new["extra"] == {"concurrency": 4}  # where earlier versions listed it
    for w in (old, odd):
        assert (w["queues"], w["concurrency"], w["busy"], w["current_steps"]) == (
            None,
            None,
            0,
            [],
        )


@pytest.mark.parametrize(
    ("rows", "queues", "reason"),
    [
        ([], ["stepstream"], "no live worker"),
        (
            [{"name": "a@h", "queues": ["gpu"], "concurrency": 2, "busy": 0}],
            ["stepstream"],
            "no worker consumes queue stepstream",
        ),
        (
            [
                {"name": "a@h", "queues": ["stepstream"], "concurrency": 2, "busy": 2},
                {"name": "b@h", "queues": ["stepstream", "gpu"], "concurrency": 1, "busy": 1},
                {"name": "c@h", "queues": ["other"], "concurrency": 8, "busy": 0},
            ],
            ["stepstream"],
            "all 3 worker slots are busy",
        ),
        (
            [{"name": "a@h", "queues": ["stepstream"], "concurrency": 1, "busy": 1}],
            ["stepstream"],
            "all 1 worker slot is busy",
        ),
        (
            [{"name": "a@h", "queues": ["stepstream"], "concurrency": 2, "busy": 1}],
            ["stepstream"],
            None,
        ),
        # A row that does not say its queues or slots: nothing can be told.
        ([{"name": "a@h"}], ["stepstream"], None),
    ],
)
def test_why_a_run_waits(rows: list[dict[str, Any]], queues: list[str], reason: str | None) -> None:
    assert queued_reason(registry(*rows), queues) == reason


def test_stale_workers_count_as_gone() -> None:
    stale = registry({"name": "a@h", "queues": ["q"], "concurrency": 1, "busy": 0}, age_s=60)
    assert queued_reason(stale, ["q"]) == "no live worker"


def test_what_a_snapshot_waits_on() -> None:
    def step(status: str, attempt: int, attempts: list[int] = ()) -> dict[str, Any]:  # type: ignore[assignment]
        return {
            "status": status,
            "attempt": attempt,
            "attempts": [{"attempt": n} for n in attempts],
        }

    assert waiting_queues({"status": "queued", "steps": []}, "d") == ["d"]
    assert waiting_queues({"status": "succeeded", "steps": [step("pending", 1)]}, "d") is None
    running = {"status": "running", "steps": [step("running", 1, [1]), step("pending", 0)]}
    assert waiting_queues(running, "d") is None
    ready = {"status": "running", "steps": [step("running", 1, [1]), step("pending", 1)]}
    assert waiting_queues(ready, "d") == ["d"]
    retry = {"status": "running", "steps": [step("running", 2, [1])]}
    assert waiting_queues(retry, "d") == ["d"]
    retrying = {"status": "running", "steps": [step("running", 2, [1, 2])]}
    assert waiting_queues(retrying, "d") is None


def test_tool_states_say_what_needs_a_restart() -> None:
    report_a = {
        "loaded": ["echo", "mine"],
        "changed": [{"path": "/x/mine.py", "tools": ["mine"]}],
        "added": ["fresh = fresh_mod:fresh"],
    }
    report_b = {"loaded": ["echo", "mine", "only_b"], "changed": [], "added": []}
    reg = registry({"name": "a@h", "tools": report_a}, {"name": "b@h", "tools": report_b})
    web = [{"name": n, "description": "", "source": "python"} for n in ("echo", "mine", "unused")]
    states = {t["name"]: t for t in tool_states(web, reg)}
    assert states["echo"]["restart_needed"] is False and states["echo"]["loaded"] is True
    assert states["mine"]["reason"] == "changed on disk since worker a@h started"
    assert states["unused"]["loaded"] is False
    assert states["unused"]["reason"] == "loaded by no live worker (a@h, b@h)"
    assert (
        states["only_b"]["restart_needed"] and "not by the web server" in states["only_b"]["reason"]
    )
    fresh = states["fresh"]
    assert (fresh["loaded"], fresh["restart_needed"], fresh["entry_point"]) == (
        False,
        True,
        "fresh = fresh_mod:fresh",
    )
    assert (
        fresh["reason"]
        == "new entry point `fresh = fresh_mod:fresh` on disk since worker a@h started"
    )
    # No live worker reporting: nothing to restart.
    quiet = tool_states(web, registry())
    assert not any(t["restart_needed"] for t in quiet)


def test_loaded_tools_notice_an_edited_module_not_a_touched_one(tmp_path: Path) -> None:
    source = tmp_path / "stepstream_fp_probe.py"
    source.write_text(
        "from tasks.tools import tool\n"
        "@tool('fp_probe', description='d', input_schema={'type': 'object'})\n"
        "def fp_probe(ctx, /, **kw):\n    return kw\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        from stepstream_fp_probe import fp_probe  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(tmp_path))
    assert isinstance(fp_probe, Tool)

    @tool("elsewhere", description="d", input_schema={"type": "object"})
    def elsewhere(ctx: Any, /) -> None:
        return None

    loaded = LoadedTools(ToolRegistry([fp_probe, elsewhere]))
    assert loaded.report()["changed"] == []
    source.touch()
    assert loaded.report()["changed"] == []
    source.write_text(source.read_text() + "# edited\n")
    assert loaded.report()["changed"] == [{"path": str(source), "tools": ["fp_probe"]}]


def test_tool_reports_our_workers_never_write_are_read_as_saying_nothing() -> None:
    """A row's `tools` with fields of the wrong shape (a hand-edited or foreign row)
    gives no restart reason from them, and never a 500."""
    odd = {"loaded": "echo", "changed": 7, "added": {"path": "/x.py"}}
    reg = registry({"name": "a@h", "tools": odd})
    web = [{"name": "echo", "description": "", "source": "python"}]
    [echo] = tool_states(web, reg)
    assert echo["loaded"] is False
    assert echo["reason"] == "loaded by no live worker (a@h)"
