"""The step kinds, and the one union of their models that a scenario's steps are.

To add a kind, write its module (a `StepBase` model and a `StepKind`) and list it in
`KINDS`; README "Adding a step kind" says what else a kind may bring (Lua of its own).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, Annotated, Any, Union

from pydantic import Discriminator, Tag

from .base import STEP_NAME_PATTERN, RetryPolicy, StepBase, StepKind, require_json
from .tool import ToolKind, ToolStep

#: Every kind, in the order their keys are named in error messages.
KINDS: tuple[StepKind, ...] = (ToolKind(),)

_BY_NAME = {kind.name: kind for kind in KINDS}
_BY_MODEL = {kind.model: kind for kind in KINDS}
_KEYS = " or ".join(f"`{kind.key}`" for kind in KINDS)


def kind_named(name: str | None) -> StepKind:
    """The kind stored as `name`; steps stored before kinds existed are tool steps."""
    return _BY_NAME.get(name or ToolKind.name, _BY_NAME[ToolKind.name])


def kind_of(step: StepBase) -> StepKind:
    return _BY_MODEL[type(step)]


def _tag(value: Any) -> str | None:
    """The kind of a step given as a mapping (by its kind key) or as a model."""
    if isinstance(value, StepBase):
        return kind_of(value).name
    if isinstance(value, Mapping):
        found = [kind.name for kind in KINDS if kind.key in value]
        return found[0] if len(found) == 1 else None
    return None


if TYPE_CHECKING:
    AnyStep = StepBase
else:
    # pydantic picks the model by `_tag`; a step naming no kind, or two, gets one clear
    # error instead of every model's complaints.
    AnyStep = Annotated[
        Union[tuple(Annotated[kind.model, Tag(kind.name)] for kind in KINDS)],  # noqa: UP007
        Discriminator(
            _tag,
            custom_error_type="step_kind",
            custom_error_message=f"a step is a mapping with exactly one of {_KEYS}",
        ),
    ]


def without_kind_tag(loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    """An error location inside `steps` without the kind pydantic names in it:
    `steps.0.tool.name` reads `steps.0.name`, as the file has it."""
    if len(loc) >= 3 and loc[0] == "steps" and isinstance(loc[1], int) and loc[2] in _BY_NAME:
        return loc[:2] + loc[3:]
    return loc


def step_from_definition(definition: Mapping[str, Any]) -> StepBase:
    """A step re-read from its stored definition (`<step>.def`), of whichever kind."""
    tag = _tag(definition)
    return kind_named(tag).model.model_validate(dict(definition))


@lru_cache(maxsize=1024)
def step_from_json(text: str) -> StepBase:
    """`step_from_definition` of a stored definition's JSON, once per process for each:
    the steps of a scenario run many times are the same (a step is immutable, and what
    a tool receives is a copy of its input: see `references.resolve`)."""
    return step_from_definition(json.loads(text))


__all__ = [
    "KINDS",
    "STEP_NAME_PATTERN",
    "AnyStep",
    "RetryPolicy",
    "StepBase",
    "StepKind",
    "ToolKind",
    "ToolStep",
    "kind_named",
    "kind_of",
    "require_json",
    "step_from_definition",
    "step_from_json",
    "without_kind_tag",
]
