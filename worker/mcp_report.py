"""At start, a worker says which MCP servers it can reach and how many tools each has.

Steps open their own sessions when they first need one; this only makes a broken
configuration or an unreachable server visible in the worker's log right away. It runs
in a thread of the main process, and the listing in a subprocess, so the pool never
inherits an event loop or a server process.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery.signals import worker_ready

from tasks.config import Settings
from tasks.mcp_tools.catalog import McpCatalog

log = logging.getLogger(__name__)


@worker_ready.connect
def _report_mcp_servers(**_: Any) -> None:
    settings = Settings.from_env()
    if settings.mcp_config is None:
        return
    # One listing, logged as the web's catalog logs its own: each server, or the file.
    catalog = McpCatalog(settings.mcp_config, settings.mcp_refresh_s)
    threading.Thread(target=catalog.refresh, name="stepstream-mcp-report", daemon=True).start()
