"""Tools: the callables scenario steps run, their context, and the registry of them."""

from tasks.tools.builtin import BUILTIN_TOOLS
from tasks.tools.context import LocalContext, ToolContext
from tasks.tools.registry import (
    Tool,
    ToolLookup,
    ToolRegistry,
    default_registry,
    load_entry_points,
    tool,
)

__all__ = [
    "BUILTIN_TOOLS",
    "LocalContext",
    "Tool",
    "ToolContext",
    "ToolLookup",
    "ToolRegistry",
    "default_registry",
    "load_entry_points",
    "tool",
]
