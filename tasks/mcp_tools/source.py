"""MCP tools as stepstream `Tool`s: `<server>.<tool>`, called through the server's session.

A call maps the protocol onto a step: progress notifications become `step_progress`
(or `step_log` when the server gives no total), log messages become `step_log`, the
structured content (else the content blocks, as JSON) is the output, and an `isError`
result fails the step with the server's message. Input is checked against the tool's
schema before the call, like any tool's.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from mcp.types import CallToolResult
from mcp.types import Tool as McpToolInfo

from tasks.errors import StepCancelled, ToolFailure, UnknownTool
from tasks.tools import Tool, ToolContext, ToolRegistry

from .client import CallStopped, McpCallFailed, McpClients, McpUnavailable
from .config import McpConfig, McpConfigError, load_config, split_name

log = logging.getLogger(__name__)

#: `<server>.<tool>`: the server's part follows stepstream's rules, the tool keeps the
#: name its server gave it (MCP allows letters of either case, digits, `_`, `-`, `.`).
MCP_TOOL_NAME = re.compile(r"^[a-z][a-z0-9_]*\.[A-Za-z0-9_.\-]{1,128}$")


@dataclass(frozen=True)
class McpTool(Tool):
    name_pattern: ClassVar[re.Pattern[str]] = MCP_TOOL_NAME

    server: str = ""

    def summary(self) -> dict[str, Any]:
        return {**super().summary(), "source": "mcp", "server": self.server}


def build_tool(server: str, info: dict[str, Any], func: Callable[..., Any]) -> McpTool:
    """The stepstream tool for one entry of a server's `tools/list`; ValueError if unusable."""
    return McpTool(
        name=f"{server}.{info['name']}",
        description=info.get("description") or "",
        input_schema=info.get("input_schema") or {"type": "object"},
        func=func,
        server=server,
    )


def tool_info(tool: McpToolInfo) -> dict[str, Any]:
    """What stepstream keeps of a listed tool (the same shape `/api/tools` shows)."""
    return {
        "name": tool.name,
        "description": tool.description or "",
        "input_schema": tool.input_schema,
    }


def step_output(name: str, result: CallToolResult) -> Any:
    """The step's output for a tool's result; ToolFailure for an `isError` result."""
    blocks = [
        block.model_dump(mode="json", by_alias=True, exclude_none=True) for block in result.content
    ]
    if result.is_error:
        text = "; ".join(b["text"] for b in blocks if b.get("type") == "text" and b.get("text"))
        raise ToolFailure(f"{name} failed: {text or 'the server reported an error'}")
    if result.structured_content is not None:
        return result.structured_content
    return blocks


class McpToolSource:
    """The MCP tools a worker process can run, listed from its own sessions."""

    def __init__(self, config: McpConfig | None, config_error: str | None = None) -> None:
        self.config_error = config_error
        self.servers = dict(config.servers) if config else {}
        self.clients = McpClients(self.servers)
        self._tools: dict[str, dict[str, McpTool]] = {}

    @classmethod
    def from_file(cls, path: Path) -> McpToolSource:
        """The servers `path` configures; a broken file is logged, and fails MCP steps."""
        try:
            return cls(load_config(path))
        except McpConfigError as exc:
            log.error("MCP tools unavailable: %s", exc)
            return cls(None, str(exc))

    def handles(self, name: str) -> bool:
        """Whether `name` is an MCP tool's name (of a configured server, or any if broken)."""
        server, tool = split_name(name)
        return bool(tool) and (server in self.servers or self.config_error is not None)

    def get(self, name: str) -> McpTool:
        if self.config_error is not None:
            raise ToolFailure(f"the MCP configuration is invalid: {self.config_error}")
        server, tool = split_name(name)
        tools = self._tools.get(server)
        if tools is None or name not in tools:
            # Listed on first use, and again when a tool is not there: the server may
            # have gained it since.
            tools = self._list(server)
        found = tools.get(name)
        if found is None:
            raise UnknownTool(f"MCP server {server!r} has no tool {tool!r}", details={"tool": name})
        return found

    def _list(self, server: str) -> dict[str, McpTool]:
        try:
            listed = self.clients.list_tools(server)
        except McpUnavailable as exc:
            raise ToolFailure(str(exc)) from None
        tools: dict[str, McpTool] = {}
        for info in listed:
            try:
                built = build_tool(server, tool_info(info), self._caller(server, info.name))
            except ValueError as exc:
                log.warning("MCP server %r: tool %r left out: %s", server, info.name, exc)
                continue
            tools[built.name] = built
        self._tools[server] = tools
        return tools

    def _caller(self, server: str, tool: str) -> Callable[..., Any]:
        name = f"{server}.{tool}"

        def call(ctx: ToolContext, **arguments: Any) -> Any:
            try:
                result = self.clients.call_tool(
                    server,
                    tool,
                    arguments,
                    on_progress=lambda value, total, message: _progress(ctx, value, total, message),
                    on_log=lambda level, data: ctx.log(f"[{level}] {_text(data)}"),
                    should_stop=lambda: ctx.cancelled,
                )
            except CallStopped:
                raise StepCancelled(f"cancelled during the call to {name}") from None
            except McpUnavailable as exc:
                raise ToolFailure(str(exc)) from None
            except McpCallFailed as exc:
                raise ToolFailure(f"{server}.{exc}") from None
            return step_output(name, result)

        return call

    def close(self) -> None:
        self.clients.close()


def _progress(ctx: ToolContext, value: float, total: float | None, message: str | None) -> None:
    if total:
        ctx.progress(min(1.0, max(0.0, value / total)), message or "")
    else:
        # Without a total there is no fraction to show; the count still says something.
        ctx.log(f"progress {value:g}" + (f": {message}" if message else ""))


def _text(data: Any) -> str:
    return data if isinstance(data, str) else json.dumps(data, default=str)


class ToolsWithMcp:
    """Python tools first, then MCP tools: what a worker looks a step's tool up in."""

    def __init__(self, python: ToolRegistry, mcp: McpToolSource) -> None:
        self.python = python
        self.mcp = mcp

    def get(self, name: str) -> Tool:
        if name not in self.python and self.mcp.handles(name):
            return self.mcp.get(name)
        return self.python.get(name)
