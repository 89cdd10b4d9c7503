"""What a worker process needs to run steps, built once per process on first use.

Built lazily rather than at import so that settings are read when the worker starts,
and so that each prefork child opens its own Redis connections after the fork.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import cache

from .config import Settings
from .store import RunStore
from .tools import ToolLookup, default_registry


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    store: RunStore
    tools: ToolLookup


_lock = threading.Lock()


@cache
def _build() -> Runtime:
    settings = Settings.from_env()
    store = RunStore.from_settings(settings, retry_s=settings.redis_retry_s)
    registry = default_registry()
    tools: ToolLookup = registry
    if settings.mcp_config is not None:
        # Imported only when used: the MCP SDK takes most of a second to import.
        from .mcp_tools.source import McpToolSource, ToolsWithMcp

        tools = ToolsWithMcp(registry, McpToolSource.from_file(settings.mcp_config))
    return Runtime(settings, store, tools)


def get_runtime() -> Runtime:
    with _lock:
        return _build()
