"""The MCP servers stepstream may call, read from the file `STEPSTREAM_MCP_CONFIG` names.

    servers:
      demo:                      # its tools are called as `demo.<tool>`
        command: python          # stdio: a command to start, talking over stdin/stdout
        args: [tests/mcp_server.py]
        env: {DEMO_MODE: "1"}
      search:
        url: http://127.0.0.1:8931/mcp     # streamable HTTP
        headers: {Authorization: Bearer abc}

YAML or JSON (JSON is YAML). A bad file is one clear error naming what is wrong.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit, urlunsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

#: A server name is the first part of its tools' names, so it follows tool-name rules.
SERVER_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class McpConfigError(Exception):
    """The configuration file cannot be used; the message says why."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StdioServer(_Strict):
    """A server started as a child process, spoken to over its stdin and stdout."""

    command: str = Field(min_length=1)
    args: list[str] = Field(default_factory=list)
    #: Added to the worker's environment (the SDK passes on a safe subset of it).
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = None

    def describe(self) -> str:
        return " ".join([self.command, *self.args])


class HttpServer(_Strict):
    """A server reached over streamable HTTP."""

    url: Annotated[str, Field(pattern=r"^https?://")]
    headers: dict[str, str] = Field(default_factory=dict)

    def describe(self) -> str:
        """The URL without its credentials (`user:secret@`) or query (tokens often ride
        there): what messages, logs and the tool catalog show of the server."""
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"  # an IPv6 literal
        netloc = host if parts.port is None else f"{host}:{parts.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


ServerConfig = StdioServer | HttpServer


class McpConfig(_Strict):
    servers: dict[str, ServerConfig] = Field(default_factory=dict)


def split_name(name: str) -> tuple[str, str]:
    """`("server", "tool")` from an MCP tool's `server.tool`; the tool may hold dots."""
    server, _, tool = name.partition(".")
    return server, tool


def parse_config(data: Any) -> McpConfig:
    """Check the parsed file; raises McpConfigError naming every problem."""
    if not isinstance(data, dict):
        raise McpConfigError("the top level must be a mapping with a `servers` key")
    servers = data.get("servers")
    if isinstance(servers, dict):
        for name, server in servers.items():
            if not isinstance(name, str) or not SERVER_NAME.fullmatch(name):
                raise McpConfigError(
                    f"server name {name!r} must match {SERVER_NAME.pattern} "
                    "(it becomes the first part of its tools' names)"
                )
            if isinstance(server, dict) and ("command" in server) == ("url" in server):
                raise McpConfigError(
                    f"server {name!r} needs exactly one of `command` (stdio) or `url` (HTTP)"
                )
    try:
        return McpConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(_describe(error) for error in exc.errors(include_url=False))
        raise McpConfigError(problems) from None


def _describe(error: Any) -> str:
    # The union's branch name (StdioServer/HttpServer) only adds noise to the location.
    where = ".".join(
        str(part) for part in error["loc"] if part not in ("StdioServer", "HttpServer")
    )
    return f"{where or 'file'}: {error['msg']}"


def load_config(path: Path) -> McpConfig:
    """Read and check the file at `path`."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise McpConfigError(f"cannot read {path}: {exc}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise McpConfigError(
            f"{path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}"
        ) from None
    try:
        return parse_config(data)
    except McpConfigError as exc:
        raise McpConfigError(f"{path}: {exc}") from None
