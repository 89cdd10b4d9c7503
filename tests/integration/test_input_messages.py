"""The 422 of `POST /api/runs` says in words what each field must be (SPEC §6): one
message per kind of rule, the rule itself kept apart in `constraint`, and a required
string of only whitespace refused (tasks/input_messages.py)."""

from __future__ import annotations

from typing import Any

import pytest

from tasks.input_messages import input_errors, pattern_phrase

#: A valid input of tests/scenarios/test_input_messages.yaml.
GOOD = {"name": "Ada", "code": "ab1"}


def details(client: Any, **changes: Any) -> list[dict[str, Any]]:
    """The 422's details for GOOD with `changes` (a None value drops that field)."""
    run_input = {k: v for k, v in (GOOD | changes).items() if v is not None}
    body = {"scenario_id": "test_input_messages", "input": run_input}
    response = client.post("/api/runs", json=body)
    assert response.status_code == 422, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert error["code"] == "invalid_input"
    return list(error["details"])


def only(client: Any, **changes: Any) -> dict[str, Any]:
    [detail] = details(client, **changes)
    return detail


@pytest.mark.parametrize(
    ("changes", "path", "message", "constraint"),
    [
        (
            {"code": "ab"},
            "$.code",
            "code: must be a lower-case word followed by a digit",
            {"pattern": "^[a-z]+[0-9]$"},
        ),
        (
            {"url": "ftp://x"},
            "$.url",
            "url: is not in the expected format (The http:// or https:// address to fetch)",
            {"pattern": "^https?://"},
        ),
        (
            {"tag": "x"},
            "$.tag",
            "tag: is not in the expected format (pattern ^#)",
            {"pattern": "^#"},
        ),
        ({"name": "ab"}, "$.name", "name: must be at least 3 characters", {"minLength": 3}),
        ({"name": "a" * 9}, "$.name", "name: must be at most 8 characters", {"maxLength": 8}),
        ({"count": 0}, "$.count", "count: must be at least 1", {"minimum": 1}),
        ({"count": 11}, "$.count", "count: must be at most 10", {"maximum": 10}),
        ({"ratio": 0}, "$.ratio", "ratio: must be more than 0", {"exclusiveMinimum": 0}),
        ({"ratio": 1.5}, "$.ratio", "ratio: must be less than 1", {"exclusiveMaximum": 1}),
        (
            {"colour": "pink"},
            "$.colour",
            "colour: must be one of: red, green, blue",
            {"enum": ["red", "green", "blue"]},
        ),
        ({"count": "3"}, "$.count", "count: must be a whole number", {"type": "integer"}),
        ({"count": 2.5}, "$.count", "count: must be a whole number", {"type": "integer"}),
        ({"ratio": "x"}, "$.ratio", "ratio: must be a number", {"type": "number"}),
        ({"flags": "a"}, "$.flags", "flags: must be a list", {"type": "array"}),
        ({"flags": [1]}, "$.flags[0]", "flags[0]: must be a string", {"type": "string"}),
        (
            {"flags": ["a", "b", "c"]},
            "$.flags",
            "flags: must have at most 2 items",
            {"maxItems": 2},
        ),
        ({"name": None}, "$.name", "name: is required", {"required": ["name"]}),
        (
            {"extra": 1},
            "$.extra",
            "extra: is not an input of this scenario",
            {"additionalProperties": False},
        ),
    ],
)
def test_each_rule_has_its_own_message_and_keeps_its_path_and_rule(
    client: Any, changes: dict[str, Any], path: str, message: str, constraint: dict[str, Any]
) -> None:
    assert only(client, **changes) == {"path": path, "message": message, "constraint": constraint}


def test_no_message_quotes_jsonschema(client: Any) -> None:
    found = details(client, name="  ", code="ab", count="x", extra=1, colour=3)
    assert len(found) == 5
    for detail in found:
        message = detail["message"]
        assert message.split(": ", 1)[0] == detail["path"].removeprefix("$.")
        for raw in ("does not match", "is too short", "is not of type", "is a required", "'"):
            assert raw not in message


@pytest.mark.parametrize("blank", ["", " ", "   ", "\t", "\n", " \t\r\n ", "\u00a0", "\u3000"])
def test_a_required_string_of_only_whitespace_is_refused(client: Any, blank: str) -> None:
    expected = "name: is required" if blank == "" else "name: must not be blank"
    # The one message: not also "must be at least 3 characters".
    assert only(client, name=blank) == {
        "path": "$.name",
        "message": expected,
        "constraint": {"required": ["name"]},
    }


def test_a_blank_required_string_is_refused_with_no_length_rule_too(client: Any) -> None:
    # test_validation's `items[].url` is a required string with no other rule.
    body = {
        "scenario_id": "test_validation",
        "input": {"count": 1, "name": "\t", "items": [{"url": "  "}, {"url": "x"}]},
    }
    response = client.post("/api/runs", json=body)
    assert response.status_code == 422
    assert [(d["path"], d["message"]) for d in response.get_json()["error"]["details"]] == [
        ("$.items[0].url", "items[0].url: must not be blank"),
        ("$.name", "name: must not be blank"),
    ]


def test_an_optional_string_may_still_be_blank(client: Any) -> None:
    body = {"scenario_id": "test_input_messages", "input": GOOD | {"nickname": "  "}}
    response = client.post("/api/runs", json=body)
    assert response.status_code == 202, response.get_data(as_text=True)
    assert response.get_json()["input"]["nickname"] == "  "


def test_whitespace_around_a_required_value_is_kept(client: Any) -> None:
    body = {"scenario_id": "test_input_messages", "input": GOOD | {"name": " Ada "}}
    response = client.post("/api/runs", json=body)
    assert response.status_code == 202, response.get_data(as_text=True)
    assert response.get_json()["input"]["name"] == " Ada "


def test_several_missing_fields_each_get_their_path(client: Any) -> None:
    found = details(client, name=None, code=None)
    assert [(d["path"], d["message"]) for d in found] == [
        ("$.code", "code: is required"),
        ("$.name", "name: is required"),
    ]


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        ({"description": "Must be a slug."}, "must be a slug"),
        ({"description": "must be lower case"}, "must be lower case"),
        ({"title": "Must start with a letter"}, "must start with a letter"),
        (
            {"title": "Code", "description": "A slug\nmore text"},
            "is not in the expected format (A slug)",
        ),
        ({"title": "Code"}, "is not in the expected format (pattern ^a)"),
        ({}, "is not in the expected format (pattern ^a)"),
    ],
)
def test_the_pattern_rule(schema: dict[str, Any], expected: str) -> None:
    assert pattern_phrase(schema, "^a") == expected


def test_other_keywords_and_nesting() -> None:
    schema = {
        "type": "object",
        "properties": {
            "tags": {"type": "array", "uniqueItems": True, "minItems": 1},
            "choice": {"enum": list(range(12))},
            "either": {"type": ["integer", "null"]},
            "opts": {
                "type": "object",
                "required": ["k"],
                "properties": {"k": {"type": "string"}},
                "additionalProperties": False,
            },
        },
    }
    messages = [
        e["message"]
        for e in input_errors(
            schema,
            {"tags": [1, 1], "choice": 99, "either": "x", "opts": {"k": " ", "z": 1}},
        )
    ]
    assert messages == [
        "choice: must be one of: 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, … (12 in all)",
        "either: must be a whole number or null",
        "opts.k: must not be blank",
        "opts.z: is not a field of this object",
        "tags: must not list the same item twice",
    ]
    assert input_errors(schema, {"tags": []})[0]["message"] == "tags: must have at least 1 item"
    # A whole number written 2.0 reads as the browser form shows it.
    [low] = input_errors({"properties": {"n": {"minimum": 2.0}}}, {"n": 1})
    assert low["message"] == "n: must be at least 2" and low["constraint"] == {"minimum": 2.0}
