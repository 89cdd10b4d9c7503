import json
import logging
from pathlib import Path

import pytest

from tasks.loader import LoadResult, load_scenarios

TOOLS = {"echo", "sleep", "fail", "http_request"}
SHIPPED = Path(__file__).resolve().parents[2] / "scenarios"

GOOD_YAML = """\
schema_version: "1"
scenario_id: {scenario_id}
name: Good
steps:
  - name: first
    tool: echo
    input: {{x: {{from: input.x}}}}
  - name: second
    tool: sleep
    input: {{seconds: 0.1}}
"""


def good_yaml(scenario_id: str = "good") -> str:
    return GOOD_YAML.format(scenario_id=scenario_id)


def steps_yaml(steps: str, extra: str = "") -> str:
    return f'schema_version: "1"\nscenario_id: broken\nname: Broken\n{extra}steps:\n{steps}'


def load(tmp_path: Path, files: dict[str, str]) -> LoadResult:
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    return load_scenarios(tmp_path, TOOLS)


def only_error(result: LoadResult, tmp_path: Path, name: str) -> str:
    assert [error.path for error in result.errors] == [str(tmp_path / name)]
    return result.errors[0].reason


def test_good_files_load(tmp_path: Path) -> None:
    definition = {
        "schema_version": "1",
        "scenario_id": "from_json",
        "name": "From JSON",
        "steps": [{"name": "only", "tool": "echo"}],
    }
    result = load(
        tmp_path,
        {
            "a.yaml": good_yaml("from_yaml"),
            "b.yml": good_yaml("from_yml"),
            "c.json": json.dumps(definition),
        },
    )
    assert result.errors == ()
    assert list(result.scenarios) == ["from_yaml", "from_yml", "from_json"]
    assert result.scenarios["from_yaml"].step("second").needs == ("first",)


def test_other_files_are_ignored(tmp_path: Path) -> None:
    result = load(
        tmp_path,
        {".hidden.yaml": "{{{", "notes.txt": "{{{", "README.md": "# hi", "ok.yaml": good_yaml()},
    )
    (tmp_path / "sub.yaml").mkdir()
    assert result.errors == ()
    assert list(result.scenarios) == ["good"]


def test_missing_directory(tmp_path: Path) -> None:
    result = load_scenarios(tmp_path / "nope", TOOLS)
    assert result.scenarios == {}
    assert len(result.errors) == 1
    assert result.errors[0].path == str(tmp_path / "nope")
    assert "does not exist" in result.errors[0].reason


def test_bad_yaml_syntax_names_the_line(tmp_path: Path) -> None:
    bad = 'schema_version: "1"\nsteps:\n  - name: [unclosed\n'
    result = load(tmp_path, {"bad.yaml": bad, "good.yaml": good_yaml()})
    reason = only_error(result, tmp_path, "bad.yaml")
    assert reason.startswith("invalid YAML at line 4")
    assert list(result.scenarios) == ["good"]


def test_bad_json_names_the_line(tmp_path: Path) -> None:
    result = load(tmp_path, {"bad.json": '{\n  "scenario_id": "x",\n}', "good.yaml": good_yaml()})
    reason = only_error(result, tmp_path, "bad.json")
    assert reason.startswith("invalid JSON at line 3")
    assert list(result.scenarios) == ["good"]


def test_duplicate_yaml_keys_are_an_error(tmp_path: Path) -> None:
    text = good_yaml() + "name: Again\n"
    reason = only_error(load(tmp_path, {"dup.yaml": text}), tmp_path, "dup.yaml")
    assert reason == "invalid YAML at line 11, column 1: duplicate key 'name'"


def test_yaml_dates_stay_strings(tmp_path: Path) -> None:
    text = good_yaml().replace("{x: {from: input.x}}", "{day: 2024-01-31}")
    result = load(tmp_path, {"dates.yaml": text})
    assert result.errors == ()
    assert result.scenarios["good"].step("first").input == {"day": "2024-01-31"}


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("bad.yaml", "- just\n- a list\n", "top level must be a mapping, not a list"),
        ("bad.yaml", "just a string\n", "top level must be a mapping, not a string"),
        ("bad.yaml", "# only a comment\n", "holds no scenario"),
        ("bad.json", "[1, 2]", "top level must be a mapping, not a list"),
        ("bad.json", "null", "top level must be a mapping, not null"),
    ],
)
def test_top_level_not_a_mapping(tmp_path: Path, name: str, text: str, expected: str) -> None:
    result = load(tmp_path, {name: text, "good.yaml": good_yaml()})
    assert expected in only_error(result, tmp_path, name)
    assert list(result.scenarios) == ["good"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            steps_yaml("  - {name: a, tool: teleport}\n"),
            "step 'a' uses unknown tool 'teleport'",
        ),
        (
            steps_yaml("  - {name: a, tool: echo}\n  - {name: a, tool: echo}\n"),
            "duplicate step name 'a'",
        ),
        (
            steps_yaml("  - {name: a, tool: echo, needs: [ghost]}\n"),
            "step 'a' needs unknown step 'ghost'",
        ),
        (
            steps_yaml("  - {name: a, tool: echo, needs: [b]}\n  - {name: b, tool: echo}\n"),
            "needs form a cycle: a -> b -> a",
        ),
        (
            steps_yaml("  - {name: a, tool: echo, input: {x: {from: secrets.key}}}\n"),
            "'secrets.key' must start with 'input' or 'steps.<name>.output'",
        ),
        (
            steps_yaml(
                "  - {name: a, tool: echo}\n"
                "  - {name: b, tool: echo, needs: [], input: {x: {from: steps.a.output}}}\n"
            ),
            "step 'b' references the output of 'a'",
        ),
        (
            steps_yaml("  - {name: a, tool: echo}\n", extra="input_schema: {type: objekt}\n"),
            "input_schema: not a valid JSON Schema",
        ),
        (
            steps_yaml("  - {name: a, tool: echo}\n", extra="input_schema: {type: string}\n"),
            "input_schema: must describe an object",
        ),
        (
            steps_yaml("  - {name: a, tool: echo}\n").replace("broken", "../etc"),
            "scenario_id: String should match pattern",
        ),
        (
            steps_yaml("  - {name: Not OK, tool: echo}\n"),
            "steps.0.name: String should match pattern",
        ),
    ],
)
def test_broken_scenarios_are_reported_and_left_out(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, text: str, expected: str
) -> None:
    with caplog.at_level(logging.WARNING, logger="tasks.loader"):
        result = load(tmp_path, {"a_good.yaml": good_yaml(), "broken.yaml": text})
    assert expected in only_error(result, tmp_path, "broken.yaml")
    assert list(result.scenarios) == ["good"]
    assert any("broken.yaml" in record.getMessage() for record in caplog.records)


def test_a_duplicate_scenario_id_leaves_out_every_file_claiming_it(tmp_path: Path) -> None:
    second = good_yaml().replace("name: Good", "name: Second")
    result = load(tmp_path, {"b.yaml": second, "a.yaml": good_yaml(), "c.yaml": good_yaml("c")})
    assert [(Path(e.path).name, e.reason, e.scenario_id) for e in result.errors] == [
        ("a.yaml", "duplicate scenario_id 'good' (also in b.yaml)", "good"),
        ("b.yaml", "duplicate scenario_id 'good' (also in a.yaml)", "good"),
    ]
    assert list(result.scenarios) == ["c"]


def test_a_broken_file_names_its_scenario_id_when_it_can(tmp_path: Path) -> None:
    broken = good_yaml("named").replace("tool: echo", "tool: teleport", 1)
    result = load(tmp_path, {"named.yaml": broken, "syntax.yaml": "a: [\n"})
    assert [(Path(e.path).name, e.scenario_id) for e in result.errors] == [
        ("named.yaml", "named"),
        ("syntax.yaml", None),
    ]


def test_shipped_scenarios_load_cleanly() -> None:
    # mcp_demo calls the tools of the MCP server that the shipped mcp.yaml names `demo`.
    demo = {
        f"demo.{name}"
        for name in ("echo", "count", "greet", "whoami", "refuse", "fail", "hang", "crash")
    }
    result = load_scenarios(SHIPPED, set(TOOLS) | demo)
    assert result.errors == ()
    assert {"hello_sequence", "fan_out_join", "failing_step", "http_fetch", "mcp_demo"} <= set(
        result.scenarios
    )
    join = result.scenarios["fan_out_join"].step("join")
    assert join.needs == ("quick", "medium", "slow")
    assert join.referenced_steps() == {"prepare", "quick", "medium", "slow"}


def test_unreadable_file_is_reported(tmp_path: Path) -> None:
    (tmp_path / "latin1.yaml").write_bytes(b"name: caf\xe9\n")
    result = load(tmp_path, {"good.yaml": good_yaml()})
    assert "cannot read the file" in only_error(result, tmp_path, "latin1.yaml")
    assert list(result.scenarios) == ["good"]


def test_directory_that_is_a_file(tmp_path: Path) -> None:
    path = tmp_path / "file.yaml"
    path.write_text(good_yaml())
    result = load_scenarios(path, TOOLS)
    assert result.scenarios == {}
    assert result.errors[0].path == str(path)
    assert "cannot list the scenarios directory" in result.errors[0].reason
