"""What every step kind shares: the common fields of a step, and the hooks of a kind.

A scenario step is one of several kinds (a tool call today; waits and fan-outs next),
told apart by the key that names the kind's own work (`tool:` for a tool step). A kind
is a `StepKind`: its pydantic model owns the kind's fields, and its hooks say what the
kind stores, how its status reads and how a worker runs an attempt of it. Every hook
has a default that does nothing special, as with Dramatiq's middleware, so that a kind
overrides only what makes it different. README "Adding a step kind" walks through one.
"""

from __future__ import annotations

import math
from collections.abc import Container, Mapping
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    StringConstraints,
    model_serializer,
)

from tasks.errors import ReferenceResolutionError, ToolFailure
from tasks.references import iter_references, parse_path, source_step
from tasks.statuses import public_step_status

if TYPE_CHECKING:
    from tasks.tools import ToolContext, ToolLookup

STEP_NAME_PATTERN = r"^[a-z0-9][a-z0-9_]{0,63}$"

_StrictInt = Annotated[int, Field(strict=True)]
_StrictFloat = Annotated[float, Field(strict=True)]


def require_json(value: Any) -> Any:
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


class StepBase(BaseModel):
    """The fields every step has, whatever its kind: its place in the graph and its
    policies. A kind's model adds the fields of its own work."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    name: Annotated[str, StringConstraints(pattern=STEP_NAME_PATTERN)]
    #: Always explicit once inside a Scenario, which fills in "the previous step".
    needs: tuple[str, ...] = ()
    #: None means the deployment's default (`STEPSTREAM_STEP_TIMEOUT_S`).
    timeout_s: _StrictFloat | None = Field(default=None, gt=0, le=86_400)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    #: `continue`: on failure the output is null and the steps needing this one still run.
    on_error: Literal["fail", "continue"] = "fail"

    @model_serializer(mode="wrap")
    def _in_file_order(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # The name, then the kind's own fields, then the common ones: a definition reads
        # like the file it came from (and as it always has, whatever the class layout).
        data: dict[str, Any] = handler(self)
        common = [field for field in StepBase.model_fields if field != "name"]
        order = ["name", *(f for f in data if f not in StepBase.model_fields), *common]
        return {field: data[field] for field in order if field in data}

    def templates(self) -> Any:
        """The part of the step that may hold `{from: ...}` references (none by default)."""
        return None

    def referenced_steps(self) -> frozenset[str]:
        """Names of the steps whose output this step's templates reference."""
        names = set()
        for path in iter_references(self.templates()):
            try:
                step = source_step(parse_path(path))
            except ReferenceResolutionError:
                continue
            if step is not None:
                names.add(step)
        return frozenset(names)


class StepKind:
    """A kind of step. Subclasses set `name`, `key` and `model`, and override the hooks
    that make the kind different; the defaults describe a step that runs in a worker
    and is stored and shown like any other."""

    #: The kind's name, stored as the step's `kind` field (and the Lua `ENTER_KIND` key).
    name: ClassVar[str]
    #: The key of a step's mapping that marks it as this kind (`tool` for a tool step).
    key: ClassVar[str]
    #: The pydantic model of a step of this kind.
    model: ClassVar[type[StepBase]]

    def problems(self, step: StepBase, known_tools: Container[str]) -> list[str]:
        """What is wrong with `step` that only the deployment can tell (its tools, its
        servers): checked when a scenario file loads, not when a run re-reads its copy."""
        return []

    def stored_fields(self, step: StepBase) -> dict[str, str | int | float]:
        """The kind's own fields of the step's state in Redis (`<step>.<field>`),
        written when the run is created, besides the ones every step has."""
        return {}

    def public_status(self, stored: str, attempt: int) -> str:
        """The status a snapshot shows for the step's stored status."""
        return public_step_status(stored, attempt)

    def resolve(self, step: StepBase, run_input: Any, outputs: dict[str, Any]) -> Any:
        """The input an attempt of `step` receives, references resolved (JSON), or None
        for a kind whose attempts receive none. Called before the attempt starts, so
        that its start records what it received; raise a `StepstreamError` (such as
        `ReferenceResolutionError`) to fail the attempt with its message."""
        return None

    def run(self, step: StepBase, resolved: Any, ctx: ToolContext, tools: ToolLookup) -> Any:
        """Run one attempt in a worker on its `resolved` input (see `resolve`) and
        return the step's output (JSON). Raise a `StepstreamError` (such as
        `ToolFailure`) to fail the attempt with its message; any other exception fails
        it too, its traceback kept for whoever debugs the step. A kind whose attempts
        never reach a worker (they wait in Redis) keeps this."""
        raise ToolFailure(f"steps of kind {self.name} do not run in a worker")
