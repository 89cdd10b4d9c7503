import copy
import datetime
from typing import Any

import pytest

from tasks.errors import ScenarioError
from tasks.scenario import RetryPolicy, Scenario, ToolStep, parse_scenario

TOOLS = {"echo", "sleep", "fail", "http_request"}


def scenario_data(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "schema_version": "1",
        "scenario_id": "demo",
        "name": "Demo",
        "description": "A demo.",
        "input_schema": {
            "type": "object",
            "required": ["url"],
            "properties": {"url": {"type": "string"}},
        },
        "steps": [
            {"name": "fetch", "tool": "http_request", "input": {"url": {"from": "input.url"}}},
            {
                "name": "extract",
                "tool": "echo",
                "input": {"b": {"from": "steps.fetch.output.body"}},
            },
            {
                "name": "report",
                "tool": "echo",
                "input": {"s": {"from": "steps.fetch.output.status"}},
            },
        ],
    }
    data.update(changes)
    return data


def with_steps(*steps: dict[str, Any]) -> dict[str, Any]:
    return scenario_data(steps=list(steps))


def reason(data: object, tools: set[str] = TOOLS) -> str:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(data, tools)
    return info.value.message


def test_parse_a_good_scenario() -> None:
    scenario = parse_scenario(scenario_data(), TOOLS)
    assert scenario.scenario_id == "demo"
    assert [step.name for step in scenario.steps] == ["fetch", "extract", "report"]
    assert scenario.step("extract").tool == "echo"
    assert scenario.step("fetch").retry == RetryPolicy()
    assert scenario.step("fetch").on_error == "fail"
    assert scenario.step("fetch").timeout_s is None


def test_omitted_needs_mean_the_previous_step() -> None:
    scenario = parse_scenario(scenario_data(), TOOLS)
    assert [step.needs for step in scenario.steps] == [(), ("fetch",), ("extract",)]


def test_explicit_needs_are_kept() -> None:
    scenario = parse_scenario(
        with_steps(
            {"name": "a", "tool": "echo"},
            {"name": "b", "tool": "echo", "needs": []},
            {"name": "c", "tool": "echo", "needs": ["a", "b"]},
        ),
        TOOLS,
    )
    assert [step.needs for step in scenario.steps] == [(), (), ("a", "b")]


def test_needs_default_also_applies_to_step_objects() -> None:
    scenario = Scenario(
        schema_version="1",
        scenario_id="objects",
        name="Objects",
        steps=(ToolStep(name="a", tool="echo"), ToolStep(name="b", tool="echo")),
    )
    assert scenario.step("b").needs == ("a",)


def test_step_lookup_of_unknown_name() -> None:
    with pytest.raises(KeyError):
        parse_scenario(scenario_data(), TOOLS).step("nope")


def test_summary() -> None:
    assert parse_scenario(scenario_data(), TOOLS).summary() == {
        "scenario_id": "demo",
        "name": "Demo",
        "description": "A demo.",
        "input_schema": scenario_data()["input_schema"],
        "step_count": 3,
    }


def test_defaults_for_optional_fields() -> None:
    data = scenario_data()
    del data["description"], data["input_schema"]
    scenario = parse_scenario(data, TOOLS)
    assert scenario.description == ""
    assert scenario.input_schema == {"type": "object"}


def test_definition_round_trips_exactly() -> None:
    data = scenario_data()
    data["steps"][0].update(
        timeout_s=30, retry={"max_attempts": 3, "backoff_s": 0.5}, on_error="continue"
    )
    scenario = parse_scenario(data, TOOLS)
    definition = scenario.definition()
    assert definition["steps"][1]["needs"] == ["fetch"]
    assert definition["steps"][0]["retry"] == {
        "max_attempts": 3,
        "backoff_s": 0.5,
        "backoff_factor": 2.0,
    }
    again = Scenario.from_definition(copy.deepcopy(definition))
    assert again == scenario
    assert again.definition() == definition


def test_from_definition_does_not_check_tools() -> None:
    scenario = parse_scenario(scenario_data(), TOOLS)
    assert Scenario.from_definition(scenario.definition()).step("fetch").tool == "http_request"


def test_from_definition_rejects_a_broken_definition() -> None:
    with pytest.raises(ScenarioError, match="scenario_id"):
        Scenario.from_definition({"schema_version": "1", "name": "x", "steps": []})


def test_referenced_steps() -> None:
    step = ToolStep(
        name="s",
        tool="echo",
        input={"a": {"from": "steps.x.output"}, "b": [{"from": "steps.y.output.0"}, "z"]},
    )
    assert step.referenced_steps() == frozenset({"x", "y"})


def test_not_a_mapping() -> None:
    assert "must be a mapping" in reason(["steps"])


def test_pydantic_errors_are_located() -> None:
    message = reason(with_steps({"name": "Bad Name", "tool": "echo"}))
    assert message.startswith("steps.0.name: String should match pattern")


def test_several_schema_errors_are_joined() -> None:
    message = reason(
        with_steps(
            {"name": "a", "tool": "echo", "timeout_s": 0},
            {"name": "b", "tool": "echo", "retry": {"max_attempts": 0}, "typo": 1},
        )
    )
    assert "steps.0.timeout_s: Input should be greater than 0" in message
    assert "steps.1.retry.max_attempts: Input should be greater than or equal to 1" in message
    assert "steps.1.typo: Extra inputs are not permitted" in message
    assert message.count("; ") == 2


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"schema_version": "2"}, "schema_version: Input should be '1'"),
        ({"scenario_id": "../etc"}, "scenario_id: String should match pattern"),
        ({"scenario_id": "Upper"}, "scenario_id: String should match pattern"),
        ({"name": ""}, "name: String should have at least 1 character"),
        ({"name": "x" * 201}, "name: String should have at most 200 characters"),
        ({"steps": []}, "steps: Tuple should have at least 1 item"),
        ({"extra": 1}, "extra: Extra inputs are not permitted"),
    ],
)
def test_file_schema_errors(changes: dict[str, Any], expected: str) -> None:
    assert expected in reason(scenario_data(**changes))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("timeout_s", 86_401),
        ("timeout_s", "10"),
        ("on_error", "ignore"),
        ("retry", {"max_attempts": 101}),
        ("retry", {"backoff_s": -1}),
        ("retry", {"backoff_s": 3601}),
        ("retry", {"backoff_factor": 0.5}),
        ("retry", {"backoff_factor": 11}),
        ("retry", {"max_attempts": True}),
        ("retry", {"retries": 3}),
    ],
)
def test_step_field_limits(field: str, value: object) -> None:
    message = reason(with_steps({"name": "a", "tool": "echo", field: value}))
    assert message.startswith(f"steps.0.{field}")


def test_step_input_must_be_json() -> None:
    message = reason(
        with_steps({"name": "a", "tool": "echo", "input": {"d": datetime.date.today()}})
    )
    assert "steps.0.input" in message
    assert "date is not a JSON value" in message


def test_unknown_tool() -> None:
    message = reason(with_steps({"name": "a", "tool": "teleport"}))
    assert message == "step 'a' uses unknown tool 'teleport'"


def test_duplicate_step_name() -> None:
    message = reason(with_steps({"name": "a", "tool": "echo"}, {"name": "a", "tool": "echo"}))
    assert message == "duplicate step name 'a'"


def test_unknown_need() -> None:
    message = reason(with_steps({"name": "a", "tool": "echo", "needs": ["ghost"]}))
    assert message == "step 'a' needs unknown step 'ghost'"


def test_step_needing_itself() -> None:
    message = reason(with_steps({"name": "a", "tool": "echo", "needs": ["a"]}))
    assert message == "step 'a' needs itself"


def test_repeated_need() -> None:
    message = reason(
        with_steps(
            {"name": "a", "tool": "echo"}, {"name": "b", "tool": "echo", "needs": ["a", "a"]}
        )
    )
    assert "lists 'a' more than once" in message


def test_cycle_reports_its_path() -> None:
    message = reason(
        with_steps(
            {"name": "a", "tool": "echo", "needs": ["c"]},
            {"name": "b", "tool": "echo", "needs": ["a"]},
            {"name": "c", "tool": "echo", "needs": ["b"]},
        )
    )
    assert message == "needs form a cycle: a -> c -> b -> a"


def test_reference_with_bad_root() -> None:
    message = reason(
        with_steps({"name": "a", "tool": "echo", "input": {"x": {"from": "env.HOME"}}})
    )
    assert "step 'a'" in message
    assert "'env.HOME' must start with 'input' or 'steps.<name>.output'" in message


def test_reference_to_unknown_step() -> None:
    message = reason(
        with_steps({"name": "a", "tool": "echo", "input": {"x": {"from": "steps.nope.output"}}})
    )
    assert "step 'a' references unknown step 'nope'" in message


def test_reference_to_own_output() -> None:
    message = reason(
        with_steps({"name": "a", "tool": "echo", "input": {"x": {"from": "steps.a.output.y"}}})
    )
    assert "references its own output" in message


def test_reference_to_step_not_needed() -> None:
    message = reason(
        with_steps(
            {"name": "a", "tool": "echo"},
            {"name": "b", "tool": "echo", "needs": []},
            {
                "name": "c",
                "tool": "echo",
                "needs": ["b"],
                "input": {"x": [{"from": "steps.a.output"}]},
            },
        )
    )
    assert "step 'c' references the output of 'a'" in message
    assert "does not need it" in message


def test_reference_to_transitively_needed_step_is_fine() -> None:
    scenario = parse_scenario(
        with_steps(
            {"name": "a", "tool": "echo"},
            {"name": "b", "tool": "echo"},
            {"name": "c", "tool": "echo", "input": {"x": {"from": "steps.a.output.deep.0"}}},
        ),
        TOOLS,
    )
    assert scenario.step("c").needs == ("b",)


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        ({"type": "objekt"}, "input_schema: not a valid JSON Schema"),
        ({"type": "object", "properties": {"x": {"type": 5}}}, "at properties.x.type"),
        ({"type": "array"}, "input_schema: must describe an object"),
        ({"type": "object", "required": "url"}, "input_schema: not a valid JSON Schema"),
    ],
)
def test_invalid_input_schema(schema: dict[str, Any], expected: str) -> None:
    assert expected in reason(scenario_data(input_schema=schema))


def test_input_schema_without_type_is_accepted() -> None:
    scenario = parse_scenario(scenario_data(input_schema={"properties": {}}), TOOLS)
    assert scenario.input_schema == {"properties": {}}


def test_error_message_lists_a_few_problems_and_details_hold_all() -> None:
    steps = [{"name": f"s{i}", "tool": "nope"} for i in range(15)]
    with pytest.raises(ScenarioError) as info:
        parse_scenario(with_steps(*steps), TOOLS)
    assert info.value.message.endswith("; and 5 more")
    assert len(info.value.details) == 15


def test_models_are_frozen() -> None:
    scenario = parse_scenario(scenario_data(), TOOLS)
    with pytest.raises(ValueError, match="frozen"):
        scenario.name = "other"


def test_problems_is_no_scenario_id() -> None:
    message = reason(scenario_data(scenario_id="problems"))
    assert message == "scenario_id: 'problems' is reserved (GET /api/scenarios/problems)"
