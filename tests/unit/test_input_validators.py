"""A scenario's input validator is built once per schema object and answers as a new one."""

from __future__ import annotations

from typing import Any

import pytest

from tasks import input_messages
from tasks.input_messages import InputValidator, compiled, input_errors

SCHEMA: dict[str, Any] = {
    "type": "object",
    "$defs": {"word": {"type": "string", "pattern": "^[a-z]+$"}},
    "properties": {
        "name": {"$ref": "#/$defs/word"},
        "n": {"type": "integer", "minimum": 0},
    },
    "required": ["name"],
    "additionalProperties": False,
}


def test_the_same_schema_object_gets_the_same_validator() -> None:
    schema = dict(SCHEMA)
    assert compiled(schema) is compiled(schema)


def test_an_equal_but_distinct_schema_gets_its_own() -> None:
    first, second = dict(SCHEMA), dict(SCHEMA)
    assert compiled(first) is not compiled(second)
    assert compiled(first).schema is first
    assert compiled(second).schema is second


@pytest.mark.parametrize(
    "value",
    [{"name": "abc", "n": 1}, {"name": "  "}, {"name": "A1", "n": -1, "extra": True}, {}, []],
)
def test_errors_are_those_of_a_new_validator(value: Any) -> None:
    schema = dict(SCHEMA)
    input_errors(schema, value)  # compiled and used once already
    fresh = sorted(
        (list(e.absolute_path), e.validator) for e in InputValidator(schema).iter_errors(value)
    )
    cached = sorted(
        (list(e.absolute_path), e.validator) for e in compiled(schema).iter_errors(value)
    )
    assert cached == fresh


def test_the_cache_keeps_at_most_its_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(input_messages, "COMPILED_KEPT", 3)
    schemas = [{"type": "object", "minProperties": i} for i in range(5)]
    for schema in schemas:
        compiled(schema)
    assert len(input_messages._compiled) == 3
    assert input_errors(schemas[0], {}) == []
    assert [e["constraint"] for e in input_errors(schemas[4], {})] == [{"minProperties": 4}]
