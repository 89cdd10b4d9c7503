"""Tools for the benchmarks, loaded by the workers through the real entry-point group."""

from __future__ import annotations

from typing import Any

from tasks.tools import ToolContext, tool


@tool(
    "chatter",
    description="Report progress `count` times as fast as the step can: a publish load.",
    input_schema={
        "type": "object",
        "required": ["count"],
        "additionalProperties": False,
        "properties": {"count": {"type": "integer", "minimum": 1}},
    },
)
def chatter(ctx: ToolContext, /, *, count: int) -> dict[str, Any]:
    for i in range(1, count + 1):
        ctx.progress(i / count, str(i))
    return {"count": count}
