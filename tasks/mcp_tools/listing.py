"""Ask every configured MCP server for its tools, in a process of its own.

    python -m tasks.mcp_tools.listing CONFIG

prints one JSON object: `{"servers": {name: {"tools": [...]} or {"error": "..."}}}`, or
`{"error": "..."}` when the file itself is unusable. The web runs this instead of
holding sessions itself: its processes stay free of event loops and child servers, and
a server that hangs costs a subprocess, never a request.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .client import CONNECT_TIMEOUT_S, LIST_TIMEOUT_S, McpClients, McpUnavailable
from .config import McpConfigError, load_config
from .source import tool_info


def list_servers(path: Path) -> dict[str, Any]:
    try:
        config = load_config(path)
    except McpConfigError as exc:
        return {"error": str(exc)}
    # A server's stderr must not hold this process's pipes open (its reader waits for
    # their end), nor mix into its answer.
    clients = McpClients(dict(config.servers), errlog=open(os.devnull, "w"))  # noqa: SIM115

    def one(server: str) -> dict[str, Any]:
        try:
            return {"tools": [tool_info(tool) for tool in clients.list_tools(server)]}
        except McpUnavailable as exc:
            return {"error": str(exc)}

    try:
        with ThreadPoolExecutor(max(1, len(config.servers))) as pool:
            listed = dict(zip(config.servers, pool.map(one, config.servers), strict=True))
    finally:
        clients.close()
    return {"servers": listed}


#: The most one listing may take: connecting and listing, plus starting Python.
LISTING_TIMEOUT_S = CONNECT_TIMEOUT_S + LIST_TIMEOUT_S + 15


def list_in_subprocess(path: Path) -> dict[str, Any]:
    """`list_servers(path)`, run in a child process; a failure of its own is an `error`."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", __name__, str(path)],
            capture_output=True,
            text=True,
            timeout=LISTING_TIMEOUT_S,
            check=False,
        )
    except (subprocess.TimeoutExpired, OSError) as exc:
        return {"error": f"listing the MCP servers failed: {exc}"}
    try:
        answer: dict[str, Any] = json.loads(done.stdout)
        return answer
    except json.JSONDecodeError:
        stderr = done.stderr.strip()[-500:] or f"exit status {done.returncode}"
        return {"error": f"listing the MCP servers failed: {stderr}"}


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m tasks.mcp_tools.listing CONFIG", file=sys.stderr)
        return 2
    json.dump(list_servers(Path(argv[0])), sys.stdout)  # close() never raises
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
