"""How a followed run ended, as `stepstream run --follow` prints it last: the status,
what the run gave (or what failed), and the run's page.

What a run "gave" is its `output` when the server reports one (SPEC §11.4), else the
outputs of its last steps, those no other step needs, by step name: in a chain that is
the last step's, in a fan-in the join's, in a fan-out each branch's end.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from tasks.statuses import RunStatus, StepStatus

#: Output longer than this (as printed) is cut, with a note on where to read all of it.
MAX_OUTPUT_CHARS = 4000


def last_steps(definition: Mapping[str, Any]) -> list[str]:
    """The steps no other step needs, in definition order."""
    steps = [s for s in definition.get("steps") or [] if isinstance(s, Mapping)]
    needed = {need for s in steps for need in s.get("needs") or []}
    return [str(s["name"]) for s in steps if s.get("name") not in needed]


def run_output(snapshot: Mapping[str, Any], definition: Mapping[str, Any]) -> Any:
    """What the run gave: its own `output`, else its succeeded last steps' by name."""
    if snapshot.get("output") is not None:
        return snapshot["output"]
    by_name = {s.get("name"): s for s in snapshot.get("steps") or [] if isinstance(s, Mapping)}
    return {
        name: by_name[name].get("output")
        for name in last_steps(definition)
        if by_name.get(name, {}).get("status") == StepStatus.SUCCEEDED
    }


def failures(snapshot: Mapping[str, Any]) -> list[str]:
    """Why the run did not succeed: each failed step's message, else the run's own."""
    lines = [
        f"step {s.get('name')} failed: {s.get('message') or 'no message'}"
        for s in snapshot.get("steps") or []
        if isinstance(s, Mapping) and s.get("status") == StepStatus.FAILED
    ]
    if not lines and snapshot.get("message"):
        lines.append(str(snapshot["message"]))
    return lines


def output_text(value: Any, *, pretty: bool, limit: int = MAX_OUTPUT_CHARS) -> tuple[str, str]:
    """`value` as JSON (indented when `pretty`), cut at `limit` characters; and a note
    saying it was cut, or ""."""
    text = json.dumps(value, indent=2 if pretty else None, ensure_ascii=False)
    if len(text) <= limit:
        return text, ""
    cut = text[:limit]
    if pretty and "\n" in cut:
        cut = cut[: cut.rindex("\n")]  # whole lines on a terminal
    return cut + " …", f"output cut: {len(cut):,} of {len(text):,} characters shown"


def ending(
    snapshot: Mapping[str, Any],
    definition: Mapping[str, Any] | None,
    page: str,
    *,
    pretty: bool,
) -> list[str]:
    """The lines `run --follow` ends with (plain text, no markup)."""
    status = str(snapshot.get("status"))
    run_id = str(snapshot.get("run_id"))
    lines: list[str] = []
    if status == RunStatus.SUCCEEDED:
        output = run_output(snapshot, definition or {})
        text, note = output_text(output, pretty=pretty)
        lines += ["output:", text]
        if note:
            lines.append(f"({note}; stepstream show {run_id} has all of it)")
    else:
        lines += failures(snapshot)
    lines.append(f"run {status}: {page}")
    return lines
