"""Running one attempt: every way a step can end becomes an Outcome, never a raise."""

from __future__ import annotations

import json
from typing import Any

from tasks.engine import execute
from tasks.tools import LocalContext, ToolRegistry, default_registry, tool


def run(
    definition: dict[str, Any],
    registry: ToolRegistry | None = None,
    outputs: dict[str, Any] | None = None,
    max_output_bytes: int = 1 << 20,
) -> Any:
    return execute(
        registry or default_registry(),
        {"name": "s", **definition},  # a stored definition always names its step
        {"who": "Ada"},
        outputs or {},
        LocalContext(),
        timeout_s=5,
        max_output_bytes=max_output_bytes,
    )


def test_success_resolves_references_and_encodes_output() -> None:
    outcome = run(
        {"tool": "echo", "input": {"n": {"from": "input.who"}, "p": {"from": "steps.a.output.v"}}},
        outputs={"a": {"v": [1, 2]}},
    )
    assert outcome.succeeded and json.loads(outcome.output_json) == {"n": "Ada", "p": [1, 2]}


def test_tool_failure_message_is_the_step_message() -> None:
    outcome = run({"tool": "fail", "input": {"message": "no luck"}})
    assert not outcome.succeeded and outcome.message == "no luck"


def test_invalid_tool_input_names_the_field() -> None:
    outcome = run({"tool": "sleep", "input": {"seconds": "soon"}})
    assert not outcome.succeeded
    assert "invalid input for tool sleep" in outcome.message and "$.seconds" in outcome.message


def test_bad_reference_fails_the_step() -> None:
    outcome = run({"tool": "echo", "input": {"x": {"from": "input.missing"}}})
    assert not outcome.succeeded and "missing" in outcome.message


def test_crash_and_unserialisable_and_oversize_outputs_fail_cleanly() -> None:
    registry = ToolRegistry()

    @tool("crash", description="raises", input_schema={"type": "object"})
    def crash(ctx: Any, /) -> None:
        raise RuntimeError("kaput")

    @tool("weird", description="returns a set", input_schema={"type": "object"})
    def weird(ctx: Any, /) -> Any:
        return {1, 2}

    @tool("huge", description="big output", input_schema={"type": "object"})
    def huge(ctx: Any, /) -> Any:
        return "x" * 5000

    for t in (crash, weird, huge):
        registry.register(t)
    assert run({"tool": "crash"}, registry).message == "RuntimeError: kaput"
    assert run({"tool": "weird"}, registry).message.startswith("output is not JSON")
    big = run({"tool": "huge"}, registry, max_output_bytes=1000)
    assert not big.succeeded and "over the limit of 1000" in big.message


def test_outputs_and_messages_that_strict_json_cannot_hold_fail_cleanly() -> None:
    registry = ToolRegistry()

    @tool("nan", description="returns NaN", input_schema={"type": "object"})
    def nan(ctx: Any, /) -> Any:
        return {"x": float("nan")}

    @tool("surrogate", description="returns a lone surrogate", input_schema={"type": "object"})
    def surrogate(ctx: Any, /) -> Any:
        return {"x": "bad \ud800"}

    @tool("loud", description="fails with a long, broken message", input_schema={"type": "object"})
    def loud(ctx: Any, /) -> Any:
        raise RuntimeError("\udc80" + "x" * 100_000)

    for t in (nan, surrogate, loud):
        registry.register(t)
    assert run({"tool": "nan"}, registry).message.startswith("output is not JSON")
    assert run({"tool": "surrogate"}, registry).message.startswith("output is not JSON")
    loud_message = run({"tool": "loud"}, registry).message
    assert loud_message.startswith("RuntimeError: \\udc80xxx")
    assert len(loud_message.encode()) <= 8192 and loud_message.endswith("bytes truncated]")
