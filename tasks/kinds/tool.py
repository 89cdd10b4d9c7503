"""The tool step: call a registered tool (Python or MCP) with the step's input."""

from __future__ import annotations

from collections.abc import Container, Mapping
from typing import TYPE_CHECKING, Annotated, Any, Protocol, runtime_checkable

from pydantic import AfterValidator, Field

from tasks.errors import ToolFailure
from tasks.references import iter_references, resolve

from .base import StepBase, StepKind, require_json

if TYPE_CHECKING:
    from tasks.tools import ToolContext, ToolLookup


@runtime_checkable
class ToolSchemas(Protocol):
    """Known tools that can also check an input against a tool's schema (the web's
    catalog of tools); `None` when the tool's schema is not known here."""

    def input_errors(self, tool: str, value: Mapping[str, Any]) -> list[dict[str, str]] | None: ...


class ToolStep(StepBase):
    """A step that calls `tool` with `input`."""

    tool: str = Field(min_length=1)
    #: Literals and `{from: ...}` references, resolved just before the tool runs.
    input: Annotated[dict[str, Any], AfterValidator(require_json)] = Field(default_factory=dict)

    def templates(self) -> Any:
        return self.input


class ToolKind(StepKind):
    name = "tool"
    key = "tool"
    model = ToolStep

    def problems(self, step: StepBase, known_tools: Container[str]) -> list[str]:
        assert isinstance(step, ToolStep)
        if step.tool not in known_tools:
            return [f"step {step.name!r} uses unknown tool {step.tool!r}"]
        if not isinstance(known_tools, ToolSchemas) or next(iter_references(step.input), None):
            return []  # an input with references is checked when they are resolved
        # A fixed input that breaks the tool's schema would fail every run: say so now.
        errors = known_tools.input_errors(step.tool, step.input)
        if not errors:
            return []
        return [f"step {step.name!r}: input does not fit tool {step.tool!r}: {_listed(errors)}"]

    def stored_fields(self, step: StepBase) -> dict[str, str | int | float]:
        assert isinstance(step, ToolStep)
        return {"tool": step.tool}

    def resolve(self, step: StepBase, run_input: Any, outputs: dict[str, Any]) -> Any:
        assert isinstance(step, ToolStep)
        return resolve(step.input, run_input, outputs)

    def run(self, step: StepBase, resolved: Any, ctx: ToolContext, tools: ToolLookup) -> Any:
        assert isinstance(step, ToolStep)
        tool = tools.get(step.tool)
        errors = tool.input_errors(resolved)
        if errors:
            raise ToolFailure(f"invalid input for tool {tool.name}: {_listed(errors)}")
        return tool.func(ctx, **resolved)


def _listed(errors: list[dict[str, str]]) -> str:
    """Schema errors (`Tool.input_errors`) on one line: `<path>: <message>; ...`."""
    return "; ".join(f"{e['path']}: {e['message']}" for e in errors)
