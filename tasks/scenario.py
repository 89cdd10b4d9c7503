"""The scenario model: a named graph of steps of some kind (tasks/kinds), checked when loaded.

Everything that can be known wrong before a run is checked here, so a run never starts
on a scenario that is bound to fail for a reason the file already shows: the file's
shape (pydantic), the graph (duplicate names, unknown needs, cycles), the references
(their roots, and that a step only reads outputs of steps it waits for), the
`input_schema`, and, in `parse_scenario` only, what each step's kind checks against the
deployment (a tool step: that its tool exists).

Tools are left out of the model's own validation on purpose: a run carries a copy of
its scenario (`definition()` / `from_definition()`), and the worker reading it back may
not have the web process's tool list in hand.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Container, Mapping, Sequence
from typing import Annotated, Any, Literal, Self

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StringConstraints,
    ValidationError,
    model_validator,
)

from tasks.dag import TransitiveNeeds, find_cycle
from tasks.errors import ReferenceResolutionError, ScenarioError
from tasks.kinds import (
    STEP_NAME_PATTERN,
    AnyStep,
    RetryPolicy,
    StepBase,
    ToolStep,
    kind_of,
    require_json,
    without_kind_tag,
)
from tasks.references import iter_references, parse_path, source_step
from tasks.schema_refs import BadReference, check_references

SCENARIO_ID_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}$"

__all__ = [
    "SCENARIO_ID_PATTERN",
    "STEP_NAME_PATTERN",
    "RetryPolicy",
    "Scenario",
    "StepBase",
    "ToolStep",
    "parse_scenario",
]

#: How many problems an error message lists before it says "and N more".
_MAX_LISTED = 10


def _object_schema(value: dict[str, Any]) -> dict[str, Any]:
    require_json(value)
    try:
        Draft202012Validator.check_schema(value)
    except SchemaError as exc:
        where = ".".join(str(part) for part in exc.path)
        at = f" (at {where})" if where else ""
        raise ValueError(f"not a valid JSON Schema: {exc.message}{at}") from None
    try:
        check_references(value)
    except BadReference as exc:
        raise ValueError(f"not a usable JSON Schema: {exc}") from None
    if "type" in value and value["type"] != "object":
        raise ValueError(f"must describe an object (type: object), not type {value['type']!r}")
    return value


#: Ids that name an API route under /api/scenarios/ (SPEC §6), so no scenario's.
RESERVED_IDS = frozenset({"problems"})


def _not_reserved(scenario_id: str) -> str:
    if scenario_id in RESERVED_IDS:
        raise ValueError(f"{scenario_id!r} is reserved (GET /api/scenarios/{scenario_id})")
    return scenario_id


class _Problems(ValueError):
    """Several independent problems, kept apart so each gets its own line in the error."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class Scenario(BaseModel):
    """A scenario as loaded from its file: checked, immutable, needs made explicit."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    schema_version: Literal["1"]
    scenario_id: Annotated[
        str, StringConstraints(pattern=SCENARIO_ID_PATTERN), AfterValidator(_not_reserved)
    ]
    name: str = Field(min_length=1, max_length=200)
    description: str = ""
    #: JSON Schema (draft 2020-12) for the run input; always describes an object.
    input_schema: Annotated[dict[str, Any], AfterValidator(_object_schema)] = Field(
        default_factory=lambda: {"type": "object"}
    )
    steps: tuple[AnyStep, ...] = Field(min_length=1, max_length=10_000)

    _by_name: dict[str, StepBase] = PrivateAttr(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _fill_in_needs(cls, data: Any) -> Any:
        """Give every step that omits `needs` the step before it, so a list runs in order."""
        if not isinstance(data, Mapping) or not isinstance(data.get("steps"), list | tuple):
            return data
        filled: list[Any] = []
        previous: str | None = None
        for step in data["steps"]:
            default = [] if previous is None else [previous]
            if isinstance(step, Mapping) and "needs" not in step:
                step = {**step, "needs": default}
            elif isinstance(step, StepBase) and "needs" not in step.model_fields_set:
                step = step.model_copy(update={"needs": tuple(default)})
            filled.append(step)
            name = step.get("name") if isinstance(step, Mapping) else getattr(step, "name", None)
            # A broken name is reported on its own step; guessing here would only add
            # a confusing second error on the next one.
            previous = name if isinstance(name, str) else None
        return {**data, "steps": filled}

    @model_validator(mode="after")
    def _check_graph(self) -> Self:
        problems = _graph_problems(self.steps)
        if problems:
            raise _Problems(problems)
        self._by_name = {step.name: step for step in self.steps}
        return self

    def step(self, name: str) -> StepBase:
        """The step called `name`; KeyError when there is none."""
        return self._by_name[name]

    def summary(self) -> dict[str, Any]:
        """The listing entry: `{scenario_id, name, description, input_schema, step_count}`."""
        return {
            "scenario_id": self.scenario_id,
            "name": self.name,
            "description": self.description,
            "input_schema": copy.deepcopy(self.input_schema),
            "step_count": len(self.steps),
        }

    def definition(self) -> dict[str, Any]:
        """The full definition as plain JSON, every default and every step's needs spelled out."""
        return self.model_dump(mode="json")

    @classmethod
    def from_definition(cls, definition: Mapping[str, Any]) -> Scenario:
        """Re-create a scenario from `definition()` output; tools are not checked again."""
        try:
            return cls.model_validate(dict(definition))
        except ValidationError as exc:
            raise _invalid(_describe(exc)) from None


def _graph_problems(steps: Sequence[StepBase]) -> list[str]:
    """Everything wrong with the step graph, each problem once, in definition order.

    Checks run in layers, each only when the one before found nothing: a cycle search
    over unknown names, or reference checks over a cyclic graph, would only add noise.
    """
    counts = Counter(step.name for step in steps)
    duplicates = [name for name, count in counts.items() if count > 1]
    if duplicates:
        return [f"duplicate step name {name!r}" for name in duplicates]

    problems: list[str] = []
    for step in steps:
        listed: set[str] = set()
        for need in step.needs:
            if need == step.name:
                problems.append(f"step {step.name!r} needs itself")
            elif need not in counts:
                problems.append(f"step {step.name!r} needs unknown step {need!r}")
            elif need in listed:
                problems.append(f"step {step.name!r} lists {need!r} more than once in needs")
            listed.add(need)
    if problems:
        return problems

    graph = {step.name: step.needs for step in steps}
    cycle = find_cycle(graph)
    if cycle is not None:
        return [f"needs form a cycle: {' -> '.join(cycle)}"]

    transitive = TransitiveNeeds(graph)
    for step in steps:
        for path in iter_references(step.templates()):
            problem = _reference_problem(step.name, path, transitive, counts)
            if problem is not None and problem not in problems:
                problems.append(problem)
    return problems


def _reference_problem(
    step: str, path: str, transitive: TransitiveNeeds, names: Container[str]
) -> str | None:
    try:
        source = source_step(parse_path(path))
    except ReferenceResolutionError as exc:
        return f"step {step!r}: {exc.message}"
    if source is None:
        return None
    if source == step:
        return f"step {step!r} references its own output ({path!r})"
    if source not in names:
        return f"step {step!r} references unknown step {source!r} ({path!r})"
    if not transitive.has(step, source):
        return (
            f"step {step!r} references the output of {source!r} ({path!r})"
            f" but does not need it: add {source!r} to its needs"
        )
    return None


def _describe(exc: ValidationError) -> list[str]:
    """One line per pydantic error, located like `steps.1.name: <what is wrong>`."""
    errors = exc.errors(include_url=False)
    failed_items = {error["loc"][:-1] for error in errors if len(error["loc"]) > 1}
    lines: list[str] = []
    for error in errors:
        # pydantic counts a list's length after dropping its invalid items, so a list
        # whose every item is broken also reads "too short": noise beside the real errors.
        if error["type"] == "too_short" and any(
            loc[: len(error["loc"])] == error["loc"] for loc in failed_items
        ):
            continue
        where = ".".join(str(part) for part in without_kind_tag(error["loc"]))
        prefix = f"{where}: " if where else ""
        cause = error.get("ctx", {}).get("error")
        if isinstance(cause, _Problems):
            lines.extend(prefix + problem for problem in cause.problems)
        elif isinstance(cause, ValueError):
            lines.append(prefix + str(cause))
        else:
            lines.append(prefix + error["msg"])
    return lines


def _invalid(problems: list[str]) -> ScenarioError:
    listed = "; ".join(problems[:_MAX_LISTED])
    if len(problems) > _MAX_LISTED:
        listed += f"; and {len(problems) - _MAX_LISTED} more"
    return ScenarioError(listed, details=problems)


def parse_scenario(data: object, known_tools: Container[str]) -> Scenario:
    """Check a scenario file's parsed content and build the Scenario.

    Raises ScenarioError whose message lists what is wrong (the first few problems) and
    whose `details` holds the full list.
    """
    if not isinstance(data, Mapping):
        raise ScenarioError(f"a scenario must be a mapping, not {type(data).__name__}")
    try:
        scenario = Scenario.model_validate(dict(data))
    except ValidationError as exc:
        raise _invalid(_describe(exc)) from None
    problems = [
        problem for step in scenario.steps for problem in kind_of(step).problems(step, known_tools)
    ]
    if problems:
        raise _invalid(problems)
    return scenario
