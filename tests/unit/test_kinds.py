"""Step kinds: how a step's kind is told, and what a definition keeps."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tasks.errors import ScenarioError
from tasks.kinds import KINDS, ToolStep, kind_named, kind_of, step_from_definition
from tasks.scenario import Scenario, parse_scenario


def scenario(*steps: Any) -> dict[str, Any]:
    return {"schema_version": "1", "scenario_id": "k", "name": "K", "steps": list(steps)}


def reason(*steps: Any) -> str:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(scenario(*steps), {"echo"})
    return info.value.message


@pytest.mark.parametrize(
    "step", [{"name": "a"}, {"name": "a", "input": {}}, "a", 7, None, ["tool", "echo"]]
)
def test_a_step_without_a_kind_is_one_clear_error(step: Any) -> None:
    assert reason(step) == "steps.0: a step is a mapping with exactly one of `tool`"


def test_errors_inside_a_step_are_located_as_in_the_file() -> None:
    message = reason({"name": "a", "tool": "", "retry": {"max_attempts": 0}})
    assert "steps.0.tool: String should have at least 1 character" in message
    assert "steps.0.retry.max_attempts:" in message
    assert ".tool.tool" not in message and "steps.0.tool.retry" not in message


def test_a_definition_reads_like_the_file_it_came_from() -> None:
    loaded = parse_scenario(scenario({"name": "a", "tool": "echo", "input": {"x": 1}}), {"echo"})
    step = loaded.definition()["steps"][0]
    assert list(step) == ["name", "tool", "input", "needs", "timeout_s", "retry", "on_error"]
    again = Scenario.from_definition(json.loads(json.dumps(loaded.definition())))
    assert again == loaded


def test_a_stored_definition_comes_back_as_its_kind() -> None:
    step = step_from_definition({"name": "a", "tool": "echo", "input": {"x": 1}})
    assert isinstance(step, ToolStep) and kind_of(step).name == "tool"
    assert step.input == {"x": 1}


def test_steps_stored_before_kinds_existed_are_tool_steps() -> None:
    assert kind_named(None).name == "tool"
    assert kind_named("no-such-kind").name == "tool"


def test_every_kind_names_itself_once() -> None:
    assert len({kind.name for kind in KINDS}) == len({kind.key for kind in KINDS}) == len(KINDS)


def test_the_tool_kind_checks_its_tool_and_stores_it() -> None:
    loaded = parse_scenario(scenario({"name": "a", "tool": "echo"}), {"echo"})
    step = loaded.step("a")
    kind = kind_of(step)
    assert kind.problems(step, {"echo"}) == []
    assert kind.problems(step, set()) == ["step 'a' uses unknown tool 'echo'"]
    assert kind.stored_fields(step) == {"tool": "echo"}
    assert (
        kind.public_status("ready", 1) == "pending" and kind.public_status("ready", 2) == "running"
    )


def test_a_stored_definition_is_read_once_and_a_tool_cannot_change_it() -> None:
    """Steps read from their stored JSON are shared by every attempt in a process: what
    a tool receives is a copy, so a tool that changes its input changes nothing after."""
    from tasks.engine import prepare
    from tasks.kinds import step_from_json

    text = json.dumps({"name": "a", "tool": "echo", "input": {"items": [1, 2], "x": {"y": 1}}})
    first = prepare(text, {}, {})
    assert step_from_json(text) is step_from_json(text)
    first.resolved["items"].append(3)
    first.resolved["x"]["y"] = 2
    again = prepare(text, {}, {})
    assert again.resolved == {"items": [1, 2], "x": {"y": 1}}
    assert again.input_json == '{"items": [1, 2], "x": {"y": 1}}'


def test_a_stored_definition_that_is_not_json_fails_the_attempt_with_the_reason() -> None:
    from tasks.engine import prepare

    prepared = prepare("{not json", {}, {})
    assert prepared.failure is not None and "JSONDecodeError" in prepared.failure.message
