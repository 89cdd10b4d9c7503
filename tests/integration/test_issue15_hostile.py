"""Hostile inputs and schemas against the run API's input checks, the step debugging
data, the id search and the worker registry: what a careless scenario author, a
hostile client or a bad day can do, answered without a 500 and without a wrong verdict."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tasks.task_names import RUN_STEP
from tasks.workers import read_registry
from worker.heartbeat import current_steps


def catalog(tmp_path: Path, input_schema: dict[str, Any]) -> Path:
    """A scenarios directory holding one scenario, `p`, with `input_schema`."""
    doc = {
        "schema_version": "1",
        "scenario_id": "p",
        "name": "P",
        "input_schema": input_schema,
        "steps": [{"name": "only", "tool": "echo"}],
    }
    (tmp_path / "p.yaml").write_text(json.dumps(doc))
    return tmp_path


def post(client: Any, run_input: dict[str, Any]) -> Any:
    return client.post("/api/runs", json={"scenario_id": "p", "input": run_input})


@pytest.mark.parametrize(
    ("patterns", "accepted", "refused"),
    [
        # Each pattern is a regex of its own: an inline flag opens its own pattern only.
        ({"^a": {}, "(?i)^b": {}}, {"a1": 1, "B": 2}, "zz"),
        # A backreference counts the groups of its own pattern.
        ({"(x)\\1": {}, "(y)\\1": {}}, {"xx": 1, "yy": 2}, "xy"),
    ],
)
def test_pattern_properties_are_matched_one_by_one(
    app_factory: Callable[..., Any],
    r: Any,
    tmp_path: Path,
    patterns: dict[str, Any],
    accepted: dict[str, Any],
    refused: str,
) -> None:
    schema = {"type": "object", "additionalProperties": False, "patternProperties": patterns}
    client = app_factory(scenarios_dir=catalog(tmp_path, schema)).test_client()
    assert client.get("/api/scenarios/problems").json == []
    answer = post(client, {**accepted, refused: 0})
    assert answer.status_code == 422, answer.get_data(as_text=True)
    assert [d["path"] for d in answer.json["error"]["details"]] == [f"$.{refused}"]
    assert post(client, accepted).status_code == 202


@pytest.mark.parametrize(
    ("schema", "words"),
    [
        ({"properties": {"x": {"$ref": "#/$defs/missing"}}}, "#/$defs/missing"),
        ({"properties": {"x": {"$ref": "https://example.invalid/s.json"}}}, "example.invalid"),
        ({"properties": {"x": {"$dynamicRef": "#nowhere"}}}, "#nowhere"),
        # A reference to something that is no schema (a keyword's value).
        (
            {"properties": {"a": {"type": "string"}, "x": {"$ref": "#/properties/a/type"}}},
            "#/properties/a/type",
        ),
        # References that lead back to themselves without looking any deeper.
        ({"properties": {"x": {"$ref": "#/properties/x"}}}, "#/properties/x"),
        (
            {
                "properties": {"x": {"$ref": "#/$defs/a"}},
                "$defs": {"a": {"anyOf": [{"$ref": "#/$defs/b"}]}, "b": {"$ref": "#/$defs/a"}},
            },
            "#/$defs/",
        ),
    ],
)
def test_a_schema_whose_references_cannot_be_followed_is_left_out_at_load(
    app_factory: Callable[..., Any], r: Any, tmp_path: Path, schema: dict[str, Any], words: str
) -> None:
    scenarios = catalog(tmp_path, {"type": "object", **schema})
    client = app_factory(scenarios_dir=scenarios).test_client()
    [problem] = client.get("/api/scenarios/problems").json
    assert problem["scenario_id"] == "p"
    assert "$ref" in problem["reason"] or "$dynamicRef" in problem["reason"]
    assert words in problem["reason"]
    assert post(client, {"x": 1}).status_code == 404


def test_references_that_resolve_still_work(
    app_factory: Callable[..., Any], r: Any, tmp_path: Path
) -> None:
    schema = {
        "type": "object",
        "properties": {
            "n": {"$ref": "#/$defs/count"},
            # Recursion through the instance (a tree) is fine: each level looks deeper.
            "tree": {"$ref": "#/$defs/node"},
        },
        "$defs": {
            "count": {"type": "integer", "minimum": 1},
            "node": {"type": "object", "properties": {"kids": {"items": {"$ref": "#/$defs/node"}}}},
        },
    }
    client = app_factory(scenarios_dir=catalog(tmp_path, schema)).test_client()
    assert client.get("/api/scenarios/problems").json == []
    answer = post(client, {"n": 0, "tree": {"kids": [{"kids": [3]}]}})
    assert answer.status_code == 422
    paths = [d["path"] for d in answer.json["error"]["details"]]
    assert paths == ["$.n", "$.tree.kids[0].kids[0]"]
    assert post(client, {"n": 2, "tree": {"kids": [{"kids": []}]}}).status_code == 202


#: Redis' clock when the row was read, and the worker's, an hour ahead of it.
NOW = 1_800_000_000.0
SKEW_S = 3600.0


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat()


def test_a_current_step_started_at_is_on_redis_clock_whatever_the_worker_clock() -> None:
    # The worker took the step 5 s before it beat, by its own clock an hour ahead.
    request = SimpleNamespace(name=RUN_STEP, args=("r1", "s", 1), time_start=time.time() - 5)
    [step] = current_steps([request])
    assert 4.5 <= step["running_s"] <= 6
    row = {
        "last_heartbeat": NOW - 1,  # stamped by Redis as it wrote the row
        "current_steps": [{**step, "started_at": iso(NOW - 1 - 5 + SKEW_S), "running_s": 5.0}],
    }
    workers = read_registry({"w@h": json.dumps(row)}, now=NOW, heartbeat_s=10).workers
    [listed] = workers[0]["current_steps"]
    assert listed == {"run_id": "r1", "step": "s", "attempt": 1, "started_at": iso(NOW - 6)}


def test_a_row_without_running_s_or_with_a_nonsense_one_keeps_its_started_at() -> None:
    started = iso(NOW - 30)
    steps = [
        {"run_id": "r1", "step": "a", "attempt": 1, "started_at": started},
        {"run_id": "r2", "step": "b", "attempt": 1, "started_at": started, "running_s": -1},
        {"run_id": "r3", "step": "c", "attempt": 1, "started_at": started, "running_s": "x"},
        {"run_id": "r4", "step": "d", "attempt": 1, "started_at": started, "running_s": 1e300},
    ]
    row = json.dumps({"last_heartbeat": NOW, "current_steps": steps})
    [worker] = read_registry({"w@h": row}, now=NOW, heartbeat_s=10).workers
    assert [s["started_at"] for s in worker["current_steps"]] == [started] * 4
