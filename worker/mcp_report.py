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

log = logging.getLogger(__name__)


@worker_ready.connect
def _report_mcp_servers(**_: Any) -> None:
    path = Settings.from_env().mcp_config
    if path is None:
        return

    def report() -> None:
        from tasks.mcp_tools.listing import list_in_subprocess  # loads the MCP SDK

        answer = list_in_subprocess(path)
        if "error" in answer:
            log.error("MCP tools unavailable: %s", answer["error"])
            return
        for server, result in answer["servers"].items():
            if "error" in result:
                log.warning("MCP server %r unavailable: %s", server, result["error"])
            else:
                log.info("MCP server %r: %d tools", server, len(result["tools"]))

    threading.Thread(target=report, name="stepstream-mcp-report", daemon=True).start()
