"""A run input checked against its scenario's `input_schema`, each failure in words a
person reads: `{"path": "$.name", "message": "name: is required", "constraint": {...}}`.

jsonschema's own messages quote the rule ("'ab' does not match '^[a-z]+[0-9]$'",
"'' is too short"): right for a program, not for someone filling in a form. Here the
`message` says what the value must be, starting with the field it is about; `constraint`
keeps the rule that failed (`{keyword: value}`, as written in the schema) for programs.

Two departures from plain JSON Schema, both about what a person means:
- a property its object lists as `required` is refused when its value is a string that
  is empty or only whitespace (`str.isspace`): "   " is not a name; optional properties
  take such strings as before;
- a missing required property, and each property `additionalProperties: false` refuses,
  is reported at its own path (`$.name`), not at its parent's.

The browser form (web/static/scenarios.js, `inputField`) words its own checks the same
way: change both together.
"""

from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from jsonschema import Draft202012Validator, ValidationError, validators

#: How `type: X` is said: "must be a whole number".
TYPE_WORDS = {
    "integer": "a whole number",
    "number": "a number",
    "string": "a string",
    "boolean": "true or false",
    "array": "a list",
    "object": "an object",
    "null": "null",
}
#: An `enum` longer than this is shown cut short.
ENUM_SHOWN = 10
#: Messages of the `required` keyword below, told apart by `_phrase`.
MISSING, BLANK = "is required", "must not be blank"

_STOCK = Draft202012Validator.VALIDATORS


def is_blank(value: object) -> bool:
    """A string with nothing but whitespace in it, or nothing at all."""
    return isinstance(value, str) and (value == "" or value.isspace())


def _required(
    validator: Any, required: Sequence[str], instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for name in required:
        if name not in instance:
            yield ValidationError(MISSING, path=[name])
        elif is_blank(instance[name]):
            yield ValidationError(BLANK if instance[name] else MISSING, path=[name])


def _additional_properties(
    validator: Any, additional: Any, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if additional is not False or not validator.is_type(instance, "object"):
        yield from _STOCK["additionalProperties"](validator, additional, instance, schema)
        return
    known = schema.get("properties") or {}
    # Each pattern on its own, as jsonschema matches them: joined into one regex, an
    # inline flag (`(?i)`) past the start is an error and backreferences count wrong.
    patterns = list(schema.get("patternProperties") or {})
    for name in instance:
        if name not in known and not any(re.search(p, name) for p in patterns):
            yield ValidationError(f"{name!r} was unexpected", path=[name])


#: Draft 2020-12 with the two departures above.
InputValidator = validators.extend(  # type: ignore[no-untyped-call]
    Draft202012Validator,
    {"required": _required, "additionalProperties": _additional_properties},
)


#: How many compiled validators `compiled` keeps: every scenario of a large catalog.
COMPILED_KEPT = 1024
_compiled: OrderedDict[int, tuple[Mapping[str, Any], Any]] = OrderedDict()
_compiled_lock = threading.Lock()


def compiled(schema: Mapping[str, Any]) -> Any:
    """The validator of `schema`, built once per schema object.

    A validator resolves its keywords and `$ref`s when first used and keeps them, so a
    new one per request would redo that work every time. Schemas are dicts, which
    cannot be hashed, so they are known by identity: a scenario's `input_schema` is one
    object for as long as the catalog holds the scenario. Each entry keeps its schema
    alive, so that its `id` cannot come to name another dict; the least recently used
    entries go first once `COMPILED_KEPT` are kept (a catalog that reloads makes new
    schema objects)."""
    key = id(schema)
    with _compiled_lock:
        entry = _compiled.get(key)
        if entry is not None and entry[0] is schema:
            _compiled.move_to_end(key)
            return entry[1]
    validator = InputValidator(schema)
    with _compiled_lock:
        _compiled[key] = (schema, validator)
        while len(_compiled) > COMPILED_KEPT:
            _compiled.popitem(last=False)
    return validator


def input_errors(schema: Mapping[str, Any], value: Any) -> list[dict[str, Any]]:
    """Every way `value` fails `schema`, sorted by path; `[]` when it passes.

    A field that is missing or blank gets that one message: that it is also too short,
    or fails its pattern, would only be noise."""
    found = sorted(
        compiled(schema).iter_errors(value),
        key=lambda e: [str(p) for p in e.absolute_path],
    )
    missing = {tuple(e.absolute_path) for e in found if e.validator == "required"}
    return [
        detail(e)
        for e in found
        if e.validator == "required" or tuple(e.absolute_path) not in missing
    ]


def detail(error: ValidationError) -> dict[str, Any]:
    """One error as the API reports it (SPEC §6: `path` and `message`)."""
    return {
        "path": json_path(error.absolute_path),
        "message": f"{subject(error.absolute_path)}: {_phrase(error)}",
        "constraint": {str(error.validator): _rule(error)},
    }


def _rule(error: ValidationError) -> Any:
    """The rule that failed as the schema writes it; for `required`, the one name."""
    if error.validator == "required":
        return [error.path[-1]]
    return error.validator_value


def json_path(path: Iterable[Any]) -> str:
    """A jsonschema error path as a JSONPath-like string: `$.items[0].url`."""
    out = "$"
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def subject(path: Iterable[Any]) -> str:
    """What a message is about: `name`, `items[0].url`, or the whole `input`."""
    return json_path(path).removeprefix("$").removeprefix(".") or "input"


def pattern_phrase(schema: Mapping[str, Any], pattern: str) -> str:
    """What a string failing `pattern` must be, from the words of its schema.

    A `description` (or `title`) that starts with "must" is the message itself ("must
    be a lower-case word followed by a digit"); any other description says what is
    expected ("is not in the expected format (The address to fetch)"); without one,
    the pattern is that hint."""
    description, title = (_first_line(schema.get(key)) for key in ("description", "title"))
    for text in (description, title):
        if text and text.lower().startswith("must "):
            return "must " + text[5:]
    return f"is not in the expected format ({description or f'pattern {pattern}'})"


def _first_line(text: object) -> str | None:
    if not isinstance(text, str) or not text.strip():
        return None
    return text.strip().splitlines()[0].rstrip(".")


def _phrase(error: ValidationError) -> str:
    keyword: str = str(error.validator)
    value: Any = error.validator_value
    if keyword == "required":
        return error.message
    if keyword == "additionalProperties" and value is False:
        nested = len(error.absolute_path) > 1
        return "is not a field of this object" if nested else "is not an input of this scenario"
    if keyword == "pattern":
        return pattern_phrase(error.schema if isinstance(error.schema, Mapping) else {}, value)
    if keyword == "type":
        types = value if isinstance(value, list) else [value]
        return "must be " + " or ".join(TYPE_WORDS.get(t, str(t)) for t in types)
    if keyword == "enum" and isinstance(value, list):
        shown = ", ".join(show(v) for v in value[:ENUM_SHOWN])
        more = f", … ({len(value)} in all)" if len(value) > ENUM_SHOWN else ""
        return f"must be one of: {shown}{more}"
    counted = {
        "minLength": ("must be at least", "character"),
        "maxLength": ("must be at most", "character"),
        "minItems": ("must have at least", "item"),
        "maxItems": ("must have at most", "item"),
        "minProperties": ("must have at least", "field"),
        "maxProperties": ("must have at most", "field"),
    }
    if keyword in counted:
        if keyword == "minLength" and value == 1:
            return "must not be empty"
        words, unit = counted[keyword]
        return f"{words} {value} {unit}{'' if value == 1 else 's'}"
    bounds = {
        "minimum": "must be at least",
        "maximum": "must be at most",
        "exclusiveMinimum": "must be more than",
        "exclusiveMaximum": "must be less than",
        "multipleOf": "must be a multiple of",
        "const": "must be",
    }
    if keyword in bounds:
        return f"{bounds[keyword]} {show(value)}"
    others = {
        "uniqueItems": "must not list the same item twice",
        "format": f"must be a valid {value}",
        "anyOf": "does not match any of the forms allowed",
        "oneOf": "must match exactly one of the forms allowed",
        "not": "is not allowed",
        "contains": "has no item of the kind required",
    }
    return others.get(keyword, error.message)


def show(value: Any) -> str:
    """A schema value as a person reads it: strings bare, the rest as JSON, a whole
    number without its ".0" (as the browser form shows it)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return value if isinstance(value, str) else json.dumps(value)
