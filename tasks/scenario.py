"""The scenario model: a named graph of steps, each calling a tool, checked when loaded.

Everything that can be known wrong before a run is checked here, so a run never starts
on a scenario that is bound to fail for a reason the file already shows: the file's
shape (pydantic), the graph (duplicate names, unknown needs, cycles), the references
(their roots, and that a step only reads outputs of steps it waits for), the
`input_schema`, and, in `parse_scenario` only, the tools.

Tools are left out of the model's own validation on purpose: a run carries a copy of
its scenario (`definition()` / `from_definition()`), and the worker reading it back may
not have the web process's tool list in hand.
"""

from __future__ import annotations

import copy
import math
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
from tasks.references import iter_references, parse_path, source_step

SCENARIO_ID_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
STEP_NAME_PATTERN = r"^[a-z0-9][a-z0-9_]{0,63}$"

#: How many problems an error message lists before it says "and N more".
_MAX_LISTED = 10


def _require_json(value: Any) -> Any:
    """Return `value` if it is plain JSON (finite numbers, string keys), else ValueError.

    YAML can express dates, sets and binary; those would reach a tool as Python objects
    and break `definition()` round trips, so they are refused at load time instead.
    """
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        item, at = stack.pop()
        where = f"at {at!r}: " if at else ""
        if item is None or isinstance(item, str | bool | int):
            continue
        if isinstance(item, float):
            if not math.isfinite(item):
                raise ValueError(f"{where}{item} is not a JSON number")
        elif isinstance(item, Mapping):
            for key, child in item.items():
                if not isinstance(key, str):
                    raise ValueError(f"{where}key {key!r} is not a string")
                stack.append((child, f"{at}.{key}" if at else key))
        elif isinstance(item, list | tuple):
            stack.extend((child, f"{at}.{i}" if at else str(i)) for i, child in enumerate(item))
        else:
            raise ValueError(f"{where}a {type(item).__name__} is not a JSON value (quote it?)")
    return value


def _object_schema(value: dict[str, Any]) -> dict[str, Any]:
    _require_json(value)
    try:
        Draft202012Validator.check_schema(value)
    except SchemaError as exc:
        where = ".".join(str(part) for part in exc.path)
        at = f" (at {where})" if where else ""
        raise ValueError(f"not a valid JSON Schema: {exc.message}{at}") from None
    if "type" in value and value["type"] != "object":
        raise ValueError(f"must describe an object (type: object), not type {value['type']!r}")
    return value


_StrictInt = Annotated[int, Field(strict=True)]
_StrictFloat = Annotated[float, Field(strict=True)]


class RetryPolicy(BaseModel):
    """How often a failing step is tried, and how long to wait between attempts.

    After attempt n fails, the next waits `backoff_s * backoff_factor ** (n - 1)`
    seconds, at most an hour: `lua/finish_step.lua` computes it (and only it), and
    reports it as the `step_retrying` event's `delay_s`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    #: Attempts in all, the first included: 1 means no retry.
    max_attempts: _StrictInt = Field(default=1, ge=1, le=100)
    backoff_s: _StrictFloat = Field(default=1.0, ge=0, le=3600)
    backoff_factor: _StrictFloat = Field(default=2.0, ge=1, le=10)


class Step(BaseModel):
    """One node of the graph: a tool call with its input, needs and error policy."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    name: Annotated[str, StringConstraints(pattern=STEP_NAME_PATTERN)]
    tool: str = Field(min_length=1)
    #: Literals and `{from: ...}` references, resolved just before the tool runs.
    input: Annotated[dict[str, Any], AfterValidator(_require_json)] = Field(default_factory=dict)
    #: Always explicit once inside a Scenario, which fills in "the previous step".
    needs: tuple[str, ...] = ()
    #: None means the deployment's default (`STEPSTREAM_STEP_TIMEOUT_S`).
    timeout_s: _StrictFloat | None = Field(default=None, gt=0, le=86_400)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    #: `continue`: on failure the output is null and the steps needing this one still run.
    on_error: Literal["fail", "continue"] = "fail"

    def referenced_steps(self) -> frozenset[str]:
        """Names of the steps whose output this step's input references."""
        names = set()
        for path in iter_references(self.input):
            try:
                step = source_step(parse_path(path))
            except ReferenceResolutionError:
                continue
            if step is not None:
                names.add(step)
        return frozenset(names)


class _Problems(ValueError):
    """Several independent problems, kept apart so each gets its own line in the error."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class Scenario(BaseModel):
    """A scenario as loaded from its file: checked, immutable, needs made explicit."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    schema_version: Literal["1"]
    scenario_id: Annotated[str, StringConstraints(pattern=SCENARIO_ID_PATTERN)]
    name: str = Field(min_length=1, max_length=200)
    description: str = ""
    #: JSON Schema (draft 2020-12) for the run input; always describes an object.
    input_schema: Annotated[dict[str, Any], AfterValidator(_object_schema)] = Field(
        default_factory=lambda: {"type": "object"}
    )
    steps: tuple[Step, ...] = Field(min_length=1, max_length=10_000)

    _by_name: dict[str, Step] = PrivateAttr(default_factory=dict)

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
            elif isinstance(step, Step) and "needs" not in step.model_fields_set:
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

    def step(self, name: str) -> Step:
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


def _graph_problems(steps: Sequence[Step]) -> list[str]:
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
        for path in iter_references(step.input):
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
        where = ".".join(str(part) for part in error["loc"])
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
    unknown = [
        f"step {step.name!r} uses unknown tool {step.tool!r}"
        for step in scenario.steps
        if step.tool not in known_tools
    ]
    if unknown:
        raise _invalid(unknown)
    return scenario
