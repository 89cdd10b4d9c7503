"""A small MCP server for the tests and the example scenario, built on the SDK's MCPServer
(the SDK's FastMCP, renamed in mcp 2).

    python tests/mcp_server.py                    # stdio
    python tests/mcp_server.py http [--port N]    # streamable HTTP on 127.0.0.1

Over HTTP it binds before it announces itself: the first line on stdout is
`listening on <url>`, so a test can start it on port 0 and read where it is.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError

# Logging notifications are deprecated by the 2026-07-28 protocol yet still delivered to
# clients that opt in; stepstream turns them into step_log events.
warnings.filterwarnings("ignore", category=MCPDeprecationWarning)

server = MCPServer("stepstream-test", version="1")


@server.tool(description="Return the message it is given, and who answered.")
def echo(message: str) -> dict[str, Any]:
    return {"message": message, "server_pid": os.getpid()}


@server.tool(description="Count to n, reporting progress and a log line at every step.")
async def count(n: int, ctx: Context) -> dict[str, int]:
    for i in range(1, n + 1):
        await ctx.info(f"tick {i}")
        await ctx.report_progress(i, n, f"{i} of {n}")
    return {"counted": n}


@server.tool(description="Say hello, as text content only.", structured_output=False)
def greet(name: str) -> str:
    return f"hello, {name}"


@server.tool(description="Say which Authorization header the call came with (HTTP only).")
def whoami(ctx: Context) -> dict[str, str | None]:
    headers = {k.lower(): v for k, v in (ctx.headers or {}).items()}
    return {"authorization": headers.get("authorization")}


@server.tool(description="Answer with a JSON-RPC error rather than a result.")
def refuse() -> str:
    raise MCPError(code=-32602, message="not today")


@server.tool(description="Always fail, with the given message.")
def fail(message: str = "this tool always fails") -> str:
    raise ToolError(message)


@server.tool(description="Sleep for the given seconds (an hour unless told), ignoring everything.")
async def hang(seconds: float = 3600.0) -> str:
    await anyio.sleep(seconds)
    return "woke up"


@server.tool(description="Exit the server process in the middle of the call.")
def crash() -> str:
    os._exit(3)


def serve_http(port: int) -> None:
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    app = server.streamable_http_app(host="127.0.0.1")
    config = uvicorn.Config(app, log_level="warning")
    print(f"listening on http://127.0.0.1:{sock.getsockname()[1]}/mcp", flush=True)
    uvicorn.Server(config).run(sockets=[sock])


@contextlib.contextmanager
def http_server(log_path: Path) -> Iterator[str]:
    """This server over streamable HTTP in a child process, for tests: yields its URL."""
    from devtools.processes import spawn, wait_ready

    proc = spawn([sys.executable, str(Path(__file__).resolve()), "http"], {}, log_path)

    def url() -> str | None:
        for line in log_path.read_text().splitlines():
            if line.startswith("listening on "):
                return line.split()[-1]
        return None

    try:
        wait_ready(
            proc,
            lambda: url() is not None,
            what="MCP test server",
            log_path=log_path,
            give_up=proc.kill,
        )
        yield str(url())
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("transport", nargs="?", choices=["stdio", "http"], default="stdio")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    if args.transport == "http":
        serve_http(args.port)
    else:
        server.run("stdio")


if __name__ == "__main__":
    sys.exit(main())
