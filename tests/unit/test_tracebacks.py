"""A tool's traceback as a step keeps it: whole when it fits, head and tail when not."""

from __future__ import annotations

from typing import Any

from tasks.engine import execute
from tasks.tools import LocalContext, ToolRegistry, default_registry, tool
from tasks.tracebacks import MAX_TRACEBACK_CHARS, capped, formatted


def test_a_short_text_is_kept_whole() -> None:
    assert capped("short", 100) == "short"


def test_a_long_text_keeps_head_and_tail_and_counts_what_it_left_out() -> None:
    text = "H" * 5_000 + "m" * 50_000 + "T" * 20_000
    cut = capped(text)
    assert len(cut) <= MAX_TRACEBACK_CHARS
    head, marker, tail = cut.partition(" characters left out …\n")
    assert head.startswith("H" * 4_096) and tail.endswith("T" * 12_000)
    left_out = int(head.rsplit("… ", 1)[1])
    assert left_out == len(text) - len(cut) + len(f"\n… {left_out}" + marker)


def test_a_chained_exception_is_formatted_whole_and_as_valid_unicode() -> None:
    try:
        try:
            raise KeyError("inner")
        except KeyError as exc:
            raise RuntimeError("outer \udc80") from exc
    except RuntimeError as exc:
        text = formatted(exc)
    assert "KeyError: 'inner'" in text and "direct cause" in text
    assert text.rstrip().endswith("RuntimeError: outer \\udc80")
    text.encode("utf-8")  # no lone surrogate left


def test_only_an_exception_the_tool_raised_leaves_a_traceback() -> None:
    registry = ToolRegistry()

    @tool("crash", description="raises", input_schema={"type": "object"})
    def crash(ctx: Any, /) -> None:
        raise RuntimeError("kaput")

    registry.register(crash)
    crashed = execute(
        registry, {"name": "s", "tool": "crash"}, {}, {}, LocalContext(), timeout_s=5,
        max_output_bytes=1 << 20,
    )  # fmt: skip
    assert crashed.traceback.rstrip().endswith("RuntimeError: kaput")
    declared = execute(
        default_registry(), {"name": "s", "tool": "fail", "input": {"message": "no"}}, {}, {},
        LocalContext(), timeout_s=5, max_output_bytes=1 << 20,
    )  # fmt: skip
    assert declared.message == "no" and declared.traceback == ""
