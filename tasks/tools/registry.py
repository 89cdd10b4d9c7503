"""Tools by name: the `Tool` type, the `@tool` decorator, the registry and its plugins.

Tools come from the built-in set and from the `stepstream.tools` entry-point group of
installed packages. A plugin that fails to load is logged and left out, so one broken
package cannot stop workers or the API from starting.
"""

from __future__ import annotations

import builtins
import copy
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any, ClassVar, Protocol

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from tasks.errors import UnknownTool

logger = logging.getLogger(__name__)

#: Dots are reserved for namespaced tools (`plugin.tool`) contributed by packages.
TOOL_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$")

#: The entry-point group installed packages use to contribute tools.
ENTRY_POINT_GROUP = "stepstream.tools"


@dataclass(frozen=True)
class Tool:
    """A callable registered under a name, with a description and an input JSON Schema.

    It is called as `func(ctx, **input)` and returns the step's JSON-serialisable
    output. The name and schema are checked on creation so a bad tool fails where it is
    defined, not when a run first reaches it.
    """

    #: What `name` must look like; MCP tools keep their server's names (see mcp_tools).
    name_pattern: ClassVar[re.Pattern[str]] = TOOL_NAME_PATTERN

    name: str
    description: str
    #: JSON Schema (draft 2020-12) for the keyword arguments; treat it as read-only.
    input_schema: dict[str, Any] = field(hash=False)
    func: Callable[..., Any]
    # Compiled once; a frozen dataclass cannot use cached_property, so __post_init__
    # builds it.
    _validator: Draft202012Validator = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        if not self.name_pattern.fullmatch(self.name):
            raise ValueError(
                f"invalid tool name {self.name!r}: must match {self.name_pattern.pattern}"
            )
        try:
            Draft202012Validator.check_schema(self.input_schema)
        except SchemaError as exc:
            raise ValueError(
                f"tool {self.name!r} has an invalid input_schema: {exc.message}"
            ) from exc
        validator = Draft202012Validator(
            self.input_schema, format_checker=Draft202012Validator.FORMAT_CHECKER
        )
        object.__setattr__(self, "_validator", validator)

    def summary(self) -> dict[str, Any]:
        """The tool as `GET /api/tools` lists it."""
        return {
            "name": self.name,
            "description": self.description,
            # A copy, so a caller editing the answer cannot change what is validated.
            "input_schema": copy.deepcopy(self.input_schema),
            "source": "python",
            "available": True,
        }

    def input_errors(self, value: Mapping[str, Any]) -> builtins.list[dict[str, str]]:
        """Every way `value` fails the input schema, as `{path, message}`, sorted by path.

        `path` is the JSON path of the failing value (`$` is the input itself), the same
        shape the API uses for run-input errors.
        """
        errors = [
            {"path": error.json_path, "message": error.message}
            for error in self._validator.iter_errors(value)
        ]
        return sorted(errors, key=lambda error: (error["path"], error["message"]))


def tool(
    name: str, *, description: str, input_schema: dict[str, Any]
) -> Callable[[Callable[..., Any]], Tool]:
    """Turn a function `f(ctx, **input)` into a `Tool` with this name and schema."""

    def decorate(func: Callable[..., Any]) -> Tool:
        return Tool(name=name, description=description, input_schema=input_schema, func=func)

    return decorate


class ToolLookup(Protocol):
    """Where a worker finds a step's tool by name: the registry, or more (MCP tools)."""

    def get(self, name: str) -> Tool: ...


class ToolRegistry:
    """The tools a worker can run and the API can list, by unique name."""

    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        for item in tools:
            self.register(item)

    def register(self, tool: Tool) -> None:
        if not isinstance(tool, Tool):
            raise TypeError(f"expected a Tool, got {type(tool).__name__}")
        if tool.name in self._tools:
            raise ValueError(f"a tool named {tool.name!r} is already registered")
        self._tools[tool.name] = tool

    def get(self, name: str) -> Tool:
        try:
            return self._tools[name]
        except KeyError:
            raise UnknownTool(f"unknown tool {name!r}", details={"tool": name}) from None

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._tools)

    def names(self) -> builtins.list[str]:
        """Registered names, sorted."""
        return sorted(self._tools)

    def list(self) -> builtins.list[Tool]:
        """Registered tools, sorted by name."""
        return [self._tools[name] for name in self.names()]


def load_entry_points(
    registry: ToolRegistry, group: str = ENTRY_POINT_GROUP
) -> builtins.list[Tool]:
    """Register the tools installed packages declare in `group`; return those added.

    Each entry point loads a `Tool` or an iterable of them. An entry point that cannot
    be imported, loads something else, or clashes with a registered name is logged and
    skipped as a whole, so a package never half-registers.
    """
    added: builtins.list[Tool] = []
    for entry_point in entry_points(group=group):
        try:
            tools = _load_tools(entry_point, registry)
        except Exception as exc:  # a plugin may raise anything at import time
            reason = str(exc) or type(exc).__name__
            if not isinstance(exc, _PluginError):
                reason = f"{type(exc).__name__}: {reason}"
            logger.warning(
                "skipping tool entry point %r (%s) in group %r: %s",
                entry_point.name,
                entry_point.value,
                group,
                reason,
            )
            continue
        for item in tools:
            registry.register(item)
        added.extend(tools)
    return added


class _PluginError(Exception):
    """An entry point loaded, but not into tools this registry can take."""


def _load_tools(entry_point: EntryPoint, registry: ToolRegistry) -> builtins.list[Tool]:
    loaded = entry_point.load()
    if isinstance(loaded, Tool):
        tools = [loaded]
    elif isinstance(loaded, Iterable) and not isinstance(loaded, str | bytes | Mapping):
        tools = builtins.list(loaded)
    else:
        raise _PluginError(f"expected a Tool or an iterable of Tools, got {type(loaded).__name__}")
    seen: set[str] = set()
    for item in tools:
        if not isinstance(item, Tool):
            raise _PluginError(f"expected only Tools, got a {type(item).__name__}")
        if item.name in registry or item.name in seen:
            raise _PluginError(f"a tool named {item.name!r} is already registered")
        seen.add(item.name)
    return tools


def default_registry() -> ToolRegistry:
    """The built-in tools plus those of installed packages."""
    from tasks.tools.builtin import BUILTIN_TOOLS  # builtin imports this module

    registry = ToolRegistry(BUILTIN_TOOLS)
    load_entry_points(registry)
    return registry
