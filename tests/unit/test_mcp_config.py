"""The MCP configuration file: what it accepts, and the errors it gives for the rest."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.config import Settings
from tasks.mcp_tools.config import HttpServer, McpConfigError, StdioServer, load_config


def write(tmp_path: Path, text: str, name: str = "mcp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_stdio_and_http_servers_from_yaml(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            """
servers:
  demo:
    command: python
    args: [server.py, --quiet]
    env: {MODE: test}
  search:
    url: http://127.0.0.1:8931/mcp
    headers: {Authorization: Bearer abc}
""",
        )
    )
    assert config.servers["demo"] == StdioServer(
        command="python", args=["server.py", "--quiet"], env={"MODE": "test"}
    )
    assert config.servers["search"] == HttpServer(
        url="http://127.0.0.1:8931/mcp", headers={"Authorization": "Bearer abc"}
    )


def test_json_is_read_as_json(tmp_path: Path) -> None:
    path = write(tmp_path, '{"servers": {"a": {"url": "https://x/mcp"}}}', "mcp.json")
    assert load_config(path).servers["a"] == HttpServer(url="https://x/mcp")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("servers: [", "is not valid YAML"),
        ("", "the top level must be a mapping"),
        ("servers:\n  Bad-Name: {url: http://x}", "server name 'Bad-Name' must match"),
        ("servers:\n  a: {}", "server 'a' needs exactly one of `command` (stdio) or `url`"),
        (
            "servers:\n  a: {command: x, url: http://x}",
            "server 'a' needs exactly one of `command` (stdio) or `url`",
        ),
        ("servers:\n  a: {url: ftp://x}", "servers.a.url: String should match pattern"),
        ("servers:\n  a: {command: x, argv: [y]}", "servers.a.argv: Extra inputs"),
        ("servers:\n  a: {command: x, args: y}", "servers.a.args: Input should be a valid list"),
        ("servers: 3", "servers: Input should be a valid dictionary"),
    ],
)
def test_bad_files_say_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(McpConfigError) as caught:
        load_config(path)
    assert message in str(caught.value)
    assert str(path) in str(caught.value)


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(McpConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml")


def test_settings_name_the_file() -> None:
    assert Settings.from_env({}).mcp_config is None
    settings = Settings.from_env({"STEPSTREAM_MCP_CONFIG": "/etc/mcp.yaml"})
    assert settings.mcp_config == Path("/etc/mcp.yaml")


def test_a_server_is_described_without_its_credentials() -> None:
    """Messages, logs and the tool catalog show where a server is, never its secrets."""
    from tasks.mcp_tools.config import HttpServer

    server = HttpServer(url="https://user:secret@example.com:8443/mcp?token=abc#x")
    assert server.describe() == "https://example.com:8443/mcp"
    assert HttpServer(url="http://[::1]:9/mcp").describe() == "http://[::1]:9/mcp"
