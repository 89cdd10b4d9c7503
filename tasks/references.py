"""`{from: <path>}` references inside a step's input: finding, checking and resolving them.

A reference is a mapping whose single key is `from` and whose value is a dotted path:
`input...` reads the run input, `steps.<name>.output...` a finished step's output, and
integer segments index lists (`steps.search.output.items.0.url`). There is no escape: a
literal mapping of that exact shape is always taken as a reference.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from typing import Any, TypeGuard

from tasks.errors import ReferenceResolutionError

#: The only key of a reference mapping.
REFERENCE_KEY = "from"

_ROOT_HINT = "must start with 'input' or 'steps.<name>.output'"


def is_reference(value: object) -> TypeGuard[Mapping[str, str]]:
    """True for `{"from": "<path>"}`; any other key, or a non-string path, is a literal."""
    return (
        isinstance(value, Mapping) and len(value) == 1 and isinstance(value.get(REFERENCE_KEY), str)
    )


def iter_references(value: object) -> Iterator[str]:
    """Yield the path of every reference inside nested mappings and lists, in order.

    Walks with an explicit stack rather than recursion, so no depth of nesting that a
    YAML file can express makes it fail.
    """
    stack: list[object] = [value]
    while stack:
        item = stack.pop()
        if is_reference(item):
            yield item[REFERENCE_KEY]
        elif isinstance(item, Mapping):
            stack.extend(reversed(list(item.values())))
        elif isinstance(item, list | tuple):
            stack.extend(reversed(item))


def parse_path(path: str) -> tuple[str, ...]:
    """Split a reference path into segments, checking that its root is one we know.

    Only the root is checked: whether `steps.<name>` exists, and whether the rest of the
    path leads anywhere, can only be told against a scenario or a run.
    """
    segments = tuple(path.split("."))
    known_root = segments[0] == "input" or (
        len(segments) >= 3 and segments[0] == "steps" and segments[2] == "output"
    )
    if not known_root:
        raise ReferenceResolutionError(f"reference {path!r} {_ROOT_HINT}")
    if "" in segments:
        raise ReferenceResolutionError(f"reference {path!r} has an empty segment")
    return segments


def source_step(segments: tuple[str, ...]) -> str | None:
    """The step whose output a parsed path reads, or None when it reads the run input."""
    return segments[1] if segments[0] == "steps" else None


def lookup(path: str, run_input: Any, outputs: Mapping[str, Any]) -> Any:
    """The value a reference path points at (not a copy).

    Walking through a None gives None: a step that failed under `on_error: continue` has
    a null output, and the steps that need it are meant to run and see null, not fail.
    """
    segments = parse_path(path)
    step = source_step(segments)
    if step is None:
        current, rest = run_input, segments[1:]
    elif step in outputs:
        current, rest = outputs[step], segments[3:]
    else:
        raise ReferenceResolutionError(f"reference {path!r}: no output for step {step!r}")
    for segment in rest:
        if current is None:
            return None
        current = _step_into(current, segment, path)
    return current


def _step_into(container: Any, segment: str, path: str) -> Any:
    if isinstance(container, Mapping):
        if segment not in container:
            raise ReferenceResolutionError(f"reference {path!r}: no key {segment!r}")
        return container[segment]
    if isinstance(container, list | tuple):
        # isdigit alone would accept "²" and friends, which int() then rejects.
        if not (segment.isascii() and segment.isdigit()):
            raise ReferenceResolutionError(f"reference {path!r}: {segment!r} is not a list index")
        index = int(segment)
        if index >= len(container):
            raise ReferenceResolutionError(
                f"reference {path!r}: index {index} out of range"
                f" (the list has {len(container)} items)"
            )
        return container[index]
    raise ReferenceResolutionError(
        f"reference {path!r}: cannot look up {segment!r} in {json_kind(container)}"
    )


def json_kind(value: object) -> str:
    """A parsed value's type, in the words of JSON and YAML rather than of Python."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__}"


def resolve(value: Any, run_input: Any, outputs: Mapping[str, Any]) -> Any:
    """Return a deep copy of `value` with every reference replaced by what it points at.

    The result shares nothing with `run_input` or `outputs`, so a tool that mutates its
    input cannot change another step's view of them.
    """
    if is_reference(value):
        return copy.deepcopy(lookup(value[REFERENCE_KEY], run_input, outputs))
    if isinstance(value, Mapping):
        return {key: resolve(item, run_input, outputs) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [resolve(item, run_input, outputs) for item in value]
    return copy.deepcopy(value)
