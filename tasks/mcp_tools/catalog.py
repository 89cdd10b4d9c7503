"""The MCP servers' tools as the web knows them: listed in the background, served cached.
A worker uses it once at start, to report what it can reach.

A daemon thread (a greenlet under gevent) asks every server for its tools at start,
every `STEPSTREAM_MCP_REFRESH_S` and whenever asked (`POST /api/tools/refresh`), by
running `python -m tasks.mcp_tools.listing` and reading its answer. Requests only read
what the last listing found, so a slow or dead server never holds one up. A server that
stops answering keeps its last known tools, marked unavailable with the reason. The
file is read again at each refresh, so servers can be added, removed or fixed without a
restart of the web (workers read it when they start).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Container, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..tools.registry import ToolRegistry
from .config import McpConfigError, load_config, split_name

if TYPE_CHECKING:
    from .source import McpTool

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerState:
    #: The tools of the last listing that worked; None until one has.
    tools: tuple[McpTool, ...] | None = None
    #: Why the last listing failed; None when it worked.
    error: str | None = None
    #: When the last listing ended (time.time()); None before the first. Not compared:
    #: a listing that finds the same as the last changes nothing.
    checked_at: float | None = field(default=None, compare=False)

    @property
    def available(self) -> bool:
        return self.checked_at is not None and self.error is None


def _not_here(*_: Any, **__: Any) -> Any:
    raise RuntimeError("MCP tools are called by workers, not by the web")


class McpCatalog:
    """Tools of the configured MCP servers, refreshed in the background."""

    def __init__(self, path: Path | None, refresh_s: float) -> None:
        self.path = path
        self.refresh_s = refresh_s
        self.config_error: str | None = None
        self.servers: dict[str, ServerState] = {}
        #: Bumped whenever what is known changes, so scenarios are checked again.
        self.version = 0
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._pid = -1
        self._stopped = False
        if path is not None:
            self._read_config()

    def _read_config(self) -> bool:
        """Take in the file's servers (forgetting those it no longer names); False if
        the file is unusable, which is then `config_error`."""
        assert self.path is not None
        try:
            names = set(load_config(self.path).servers)
        except McpConfigError as exc:
            if self.config_error != str(exc):
                log.error("MCP tools unavailable: %s", exc)
                self.config_error, self.servers = str(exc), {}
                self.version += 1
            return False
        servers = {name: self.servers.get(name, ServerState()) for name in sorted(names)}
        if self.config_error is not None or servers != self.servers:
            self.config_error, self.servers = None, servers
            self.version += 1
        return True

    @property
    def enabled(self) -> bool:
        return self.path is not None

    def start(self) -> None:
        """Start the refresher of this process, once (after a fork, again). It runs even
        while the file is broken: a fixed file is picked up by the next refresh."""
        if self.path is None or self._pid == os.getpid():
            return  # the common case, on every request: no lock taken
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            threading.Thread(
                target=self._refresher, name="stepstream-mcp-catalog", daemon=True
            ).start()

    def request_refresh(self) -> None:
        """Ask for a listing now; returns at once."""
        self.start()
        self._wake.set()

    def stop(self) -> None:
        """End the refresher (for tests: a process normally keeps it to the end)."""
        self._stopped = True
        self._wake.set()

    def _refresher(self) -> None:
        while not self._stopped:
            self._wake.clear()
            try:
                self.refresh()
            except Exception:  # the refresher must outlive any one bad listing
                log.exception("MCP catalog: listing failed")
            self._wake.wait(self.refresh_s)

    def refresh(self) -> None:
        """Read the file again, list every server now (blocking), take in what was found."""
        assert self.path is not None
        if self._read_config():
            # Imported here: the MCP SDK is only loaded where servers are configured.
            from .listing import list_in_subprocess

            self._take(list_in_subprocess(self.path))

    def _take(self, answer: dict[str, Any]) -> None:
        now = time.time()
        listed: dict[str, Any] = answer.get("servers") or {}
        general = answer.get("error")
        servers = dict(self.servers)
        for name in set(servers) & set(listed) if listed else set(servers):
            previous = servers.get(name, ServerState())
            result = listed.get(name) or {"error": general or "not listed"}
            if "tools" in result:
                state = ServerState(self._tools(name, result["tools"]), None, now)
                if previous.error is not None or previous.tools is None:
                    log.info("MCP server %r: %d tools", name, len(state.tools or ()))
            else:
                state = ServerState(previous.tools, str(result["error"]), now)
                if previous.error != state.error:
                    log.warning("MCP server %r unavailable: %s", name, state.error)
            servers[name] = state
        if servers != self.servers:
            self.servers = servers
            self.version += 1

    @staticmethod
    def _tools(server: str, listed: list[dict[str, Any]]) -> tuple[McpTool, ...]:
        from .source import build_tool

        tools = []
        for info in listed:
            try:
                tools.append(build_tool(server, info, _not_here))
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("MCP server %r: tool %r left out: %s", server, info.get("name"), exc)
        return tuple(tools)

    # -- what the API reads ------------------------------------------------------------

    def summaries(self, shadowed: Container[str] = ()) -> list[dict[str, Any]]:
        """Every known MCP tool as `/api/tools` lists it, by name, but those `shadowed`
        by a Python tool of the same name (which is the one a step would call)."""
        entries = []
        for _, state in sorted(self.servers.items()):
            for tool in state.tools or ():
                if tool.name in shadowed:
                    continue
                entry = {**tool.summary(), "available": state.available}
                if state.error is not None:
                    entry["error"] = state.error
                entries.append(entry)
        return entries

    def knows(self, name: str) -> bool | None:
        """Whether `name` is a tool of a server: True, False, or None when nobody knows yet.

        None when the name is not `<configured server>.<tool>` at all is False instead.
        """
        server, tool = split_name(name)
        state = self.servers.get(server)
        if not tool or state is None:
            return False
        if state.tools is None:
            return None
        return any(t.name == name for t in state.tools)

    def status(self) -> dict[str, Any]:
        """For `/readyz`: the configuration's or each server's state, in words."""
        if self.config_error is not None:
            return {"config": f"invalid: {self.config_error}"}
        report: dict[str, Any] = {}
        for name, state in sorted(self.servers.items()):
            if state.checked_at is None:
                report[name] = "not listed yet"
            elif state.error is None:
                count = len(state.tools or ())
                report[name] = f"ok: {count} tool{'' if count == 1 else 's'}"
            else:
                report[name] = f"unavailable: {state.error}"
        return report


class KnownTools:
    """The tool names scenarios may use: Python tools, and MCP tools unless known absent.

    A scenario naming a tool of a server that has not been listed yet is accepted (the
    step fails with a clear message if the tool turns out not to exist); once the
    server's tools are known, a missing one leaves the scenario out.
    """

    def __init__(self, python: Container[str], mcp: McpCatalog) -> None:
        self.python = python
        self.mcp = mcp

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        return name in self.python or self.mcp.knows(name) is not False

    def input_errors(self, tool: str, value: Mapping[str, Any]) -> list[dict[str, str]] | None:
        """How `value` fails a Python tool's input schema (`tasks.kinds.tool.ToolSchemas`);
        None for an MCP tool, whose server checks its own input when called."""
        if isinstance(self.python, ToolRegistry) and tool in self.python:
            return self.python.get(tool).input_errors(value)
        return None
