"""What the web app's views share, kept in `app.extensions["stepstream"]`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from celery import Celery
from flask import current_app

from tasks.config import Settings
from tasks.mcp_tools.catalog import McpCatalog
from tasks.redis_client import backend_errors
from tasks.store import RunStore
from tasks.tools import ToolRegistry

from .catalog import Catalog
from .hub import Hub
from .metrics import Metrics


@dataclass(frozen=True)
class Services:
    settings: Settings
    store: RunStore
    #: The process's one reader of live events (see hub.py).
    hub: Hub
    tools: ToolRegistry
    #: The MCP servers' tools, listed in the background.
    mcp: McpCatalog
    catalog: Catalog
    celery: Celery
    metrics: Metrics

    def send_task(self, name: str, args: list[Any], **options: Any) -> None:
        """Publish a Celery message; a broker that fails it raises `BackendUnavailable`
        (`BackendUnreachable` when it did not answer)."""
        with backend_errors:
            self.celery.send_task(name, args=args, **options)


def services() -> Services:
    return cast(Services, current_app.extensions["stepstream"])
