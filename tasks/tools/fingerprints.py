"""What Python tools a process loaded, and whether the disk has moved on since.

A worker keeps running the code it imported when it started: a tool module edited
afterwards, or a plugin installed afterwards, takes effect only when the worker
restarts. `LoadedTools` records, when the tools are loaded, each module that defines a
tool or that a `stepstream.tools` entry point names (its file and a hash of its
content), and the entry points then installed. `report()` compares that with the disk
now; the worker puts the result in its registry row, and `GET /api/tools` turns the rows
into `restart_needed` (see `tasks.workers.tool_states`).

What is detected: a module file whose content changed (not a mere touch), and an entry
point of the group that appeared (a package or dist-info installed, or a line added to
its `entry_points.txt`). What is not: edits to modules a tool module imports (helpers,
libraries), an entry point that failed to load at start, and MCP tools (their servers
are asked for their tools again while the system runs).
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from .registry import ENTRY_POINT_GROUP, Tool, ToolRegistry


def module_file(module_name: str | None) -> str | None:
    """The source file of an imported module, or None (a builtin, a namespace package)."""
    module = sys.modules.get(module_name or "")
    path = getattr(module, "__file__", None)
    return os.path.abspath(path) if isinstance(path, str) else None


def _entry_point_ids(group: str) -> set[str]:
    return {f"{ep.name} = {ep.value}" for ep in entry_points(group=group)}


@dataclass
class _Module:
    path: str
    sha256: str
    #: (mtime_ns, size) when `sha256` was taken: an unchanged stat is not hashed again.
    stat: tuple[int, int]
    tools: set[str] = field(default_factory=set)


def _stat(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def _sha256(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError:
        return None


class LoadedTools:
    """The Python tools of a registry as loaded, and their modules' files as then."""

    def __init__(self, registry: ToolRegistry, group: str = ENTRY_POINT_GROUP) -> None:
        self.group = group
        self.names = registry.names()
        self._modules: dict[str, _Module] = {}
        for tool in registry.list():
            self._add(module_file(getattr(tool.func, "__module__", None)), [tool.name])
        # An entry point's own module may differ from where its tools' functions live
        # (a package re-exporting them): its tools are the ones it loads.
        for ep in entry_points(group=group):
            if ep.module in sys.modules:
                self._add(module_file(ep.module), _tools_of(ep, registry))
        self.entry_points = _entry_point_ids(group)
        #: What `report` found last time, per path: (stat, changed).
        self._seen: dict[str, tuple[tuple[int, int] | None, bool]] = {}

    def _add(self, path: str | None, tools: Iterable[str]) -> None:
        if path is None:
            return
        module = self._modules.get(path)
        if module is None:
            stat, digest = _stat(path), _sha256(path)
            if stat is None or digest is None:
                return
            module = self._modules[path] = _Module(path, digest, stat)
        module.tools.update(tools)

    def changed_modules(self) -> list[_Module]:
        """The modules whose file's content differs from when they were loaded (or
        that are gone); a file is hashed again only when its stat changed."""
        changed = []
        for path, module in sorted(self._modules.items()):
            stat = _stat(path)
            seen = self._seen.get(path)
            if seen is not None and seen[0] == stat:
                is_changed = seen[1]
            elif stat == module.stat:
                is_changed = False
            else:
                is_changed = stat is None or _sha256(path) != module.sha256
            self._seen[path] = (stat, is_changed)
            if is_changed:
                changed.append(module)
        return changed

    def report(self) -> dict[str, Any]:
        """For the registry row: `loaded` (tool names), `changed` (`{path, tools}` of
        each module edited on disk since), `added` (entry points installed since, as
        `name = module:attr`)."""
        return {
            "loaded": self.names,
            "changed": [{"path": m.path, "tools": sorted(m.tools)} for m in self.changed_modules()],
            "added": sorted(_entry_point_ids(self.group) - self.entry_points),
        }


def _tools_of(ep: EntryPoint, registry: ToolRegistry) -> list[str]:
    """The registered tools entry point `ep` loads (its module is imported already)."""
    try:
        loaded = ep.load()
        items = [loaded] if isinstance(loaded, Tool) else list(loaded)
    except Exception:  # it failed at start too, and was logged then
        return []
    return [
        t.name
        for t in items
        if isinstance(t, Tool) and t.name in registry and registry.get(t.name) is t
    ]
