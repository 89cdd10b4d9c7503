"""The web's scenario catalog: broken files are left out, edits are picked up."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_for

GOOD = """
schema_version: "1"
scenario_id: {sid}
name: Good
steps:
  - {{name: only, tool: echo, input: {{x: 1}}}}
"""

BROKEN = {
    "syntax.yaml": "schema_version: '1'\nsteps: [unclosed\n",
    "unknown_tool.yaml": GOOD.format(sid="bad_tool").replace("echo", "teleport"),
    "cycle.yaml": """
schema_version: "1"
scenario_id: cyclic
name: Cyclic
steps:
  - {name: a, tool: echo, needs: [b]}
  - {name: b, tool: echo, needs: [a]}
""",
    "bad_reference.yaml": """
schema_version: "1"
scenario_id: bad_ref
name: Bad reference
steps:
  - {name: a, tool: echo, needs: []}
  - {name: b, tool: echo, needs: [], input: {v: {from: steps.a.output}}}
""",
    "not_json.json": '{"schema_version": ',
}


@pytest.fixture
def catalog_dir(tmp_path: Path) -> Path:
    (tmp_path / "good.yaml").write_text(GOOD.format(sid="good_one"))
    for name, text in BROKEN.items():
        (tmp_path / name).write_text(text)
    return tmp_path


def test_broken_files_are_reported_and_skipped(
    app_factory: Callable[..., Any], catalog_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = app_factory(scenarios_dir=catalog_dir)
    listed = app.test_client().get("/api/scenarios").json
    assert [s["scenario_id"] for s in listed] == ["good_one"]
    assert listed[0]["step_count"] == 1
    reasons = {Path(e.path).name: e.reason for e in app.extensions["stepstream"].catalog.errors}
    assert set(reasons) == set(BROKEN)
    assert "teleport" in reasons["unknown_tool.yaml"]
    assert "cycle" in reasons["cycle.yaml"]
    assert "does not need it" in reasons["bad_reference.yaml"]
    for name in BROKEN:
        assert name in caplog.text  # each skipped file is logged with its path


@pytest.mark.slow
def test_added_changed_and_removed_files_are_picked_up(
    app_factory: Callable[..., Any], catalog_dir: Path
) -> None:
    client = app_factory(scenarios_dir=catalog_dir).test_client()

    def ids() -> list[str]:
        return [s["scenario_id"] for s in client.get("/api/scenarios").json]

    (catalog_dir / "more.yaml").write_text(GOOD.format(sid="added_later"))
    wait_for(lambda: "added_later" in ids(), what="new scenario listed")
    (catalog_dir / "syntax.yaml").write_text(GOOD.format(sid="fixed_now"))
    wait_for(lambda: "fixed_now" in ids(), what="fixed scenario listed")
    (catalog_dir / "good.yaml").unlink()
    wait_for(lambda: "good_one" not in ids(), what="removed scenario gone")
    assert client.get("/api/scenarios/good_one").status_code == 404
    definition = client.get("/api/scenarios/added_later").json
    assert definition["steps"][0]["needs"] == []


def test_problems_lists_every_file_left_out(
    app_factory: Callable[..., Any], catalog_dir: Path
) -> None:
    (catalog_dir / "copy_a.yaml").write_text(GOOD.format(sid="twin"))
    (catalog_dir / "copy_b.yaml").write_text(GOOD.format(sid="twin"))
    (catalog_dir / "reserved.yaml").write_text(GOOD.format(sid="problems"))
    client = app_factory(scenarios_dir=catalog_dir).test_client()
    response = client.get("/api/scenarios/problems")
    assert response.status_code == 200
    problems = {Path(p["path"]).name: p for p in response.json}
    assert set(problems) == {*BROKEN, "copy_a.yaml", "copy_b.yaml", "reserved.yaml"}
    # A duplicate id: both files are problems, neither is served.
    assert problems["copy_a.yaml"] == {
        "path": str(catalog_dir / "copy_a.yaml"),
        "scenario_id": "twin",
        "reason": "duplicate scenario_id 'twin' (also in copy_b.yaml)",
    }
    assert problems["copy_b.yaml"]["reason"] == "duplicate scenario_id 'twin' (also in copy_a.yaml)"
    assert client.get("/api/scenarios/twin").status_code == 404
    # The id a broken file names, when it can be read; none for a syntax error.
    assert problems["unknown_tool.yaml"]["scenario_id"] == "bad_tool"
    assert "teleport" in problems["unknown_tool.yaml"]["reason"]
    assert problems["syntax.yaml"]["scenario_id"] is None
    assert "reserved" in problems["reserved.yaml"]["reason"]
    listed = [s["scenario_id"] for s in client.get("/api/scenarios").json]
    assert listed == ["good_one"]


def test_no_problems_is_an_empty_list(app_factory: Callable[..., Any], tmp_path: Path) -> None:
    (tmp_path / "good.yaml").write_text(GOOD.format(sid="good_one"))
    response = app_factory(scenarios_dir=tmp_path).test_client().get("/api/scenarios/problems")
    assert (response.status_code, response.json) == (200, [])


def test_a_fixed_input_that_breaks_its_tools_schema_is_a_problem(
    app_factory: Callable[..., Any], tmp_path: Path
) -> None:
    def scenario(sid: str, step_input: str) -> str:
        return (
            f'schema_version: "1"\nscenario_id: {sid}\nname: N\n'
            f"steps: [{{name: nap, tool: sleep, input: {step_input}}}]\n"
        )

    (tmp_path / "fixed_bad.yaml").write_text(scenario("fixed_bad", "{seconds: soon}"))
    (tmp_path / "fixed_good.yaml").write_text(scenario("fixed_good", "{seconds: 0.1}"))
    # With a reference the input is only known at run time: checked then, not now.
    (tmp_path / "referenced.yaml").write_text(
        scenario("referenced", "{seconds: {from: input.seconds}}")
    )
    client = app_factory(scenarios_dir=tmp_path).test_client()
    problems = client.get("/api/scenarios/problems").json
    assert [(Path(p["path"]).name, p["scenario_id"]) for p in problems] == [
        ("fixed_bad.yaml", "fixed_bad")
    ]
    assert problems[0]["reason"].startswith(
        "step 'nap': input does not fit tool 'sleep': $.seconds:"
    )
    listed = [s["scenario_id"] for s in client.get("/api/scenarios").json]
    assert listed == ["fixed_good", "referenced"]
