"""MCP tools against the real test server, over stdio and over streamable HTTP on loopback.

These drive `McpToolSource` the way a worker does, with a `LocalContext` standing in
for the step; the end-to-end runs through Celery are in test_mcp_runs.py.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import wait_for
from mcp_server import http_server

from tasks.errors import StepCancelled, ToolFailure, UnknownTool
from tasks.mcp_tools import client
from tasks.mcp_tools.config import HttpServer, McpConfig, StdioServer
from tasks.mcp_tools.listing import list_servers
from tasks.mcp_tools.source import McpToolSource
from tasks.tools import LocalContext

#: Real MCP servers over stdio and HTTP, restarted and killed: left out of `make test-fast`.
pytestmark = pytest.mark.slow

SERVER = str(Path(__file__).resolve().parent.parent / "mcp_server.py")
STDIO = StdioServer(command=sys.executable, args=[SERVER])


@pytest.fixture(scope="module")
def http_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with http_server(tmp_path_factory.mktemp("mcp") / "http.log") as url:
        yield url


@pytest.fixture(params=["stdio", "http"])
def source(request: pytest.FixtureRequest, http_url: str) -> Iterator[McpToolSource]:
    server = STDIO if request.param == "stdio" else HttpServer(url=http_url)
    source = McpToolSource(McpConfig(servers={"demo": server}))
    yield source
    source.close()


def test_tools_are_listed_with_their_schemas(source: McpToolSource) -> None:
    echo = source.get("demo.echo")
    assert echo.name == "demo.echo"
    assert echo.description == "Return the message it is given, and who answered."
    assert echo.input_schema["required"] == ["message"]
    assert echo.summary()["source"] == "mcp"
    assert echo.summary()["server"] == "demo"
    assert echo.input_errors({"message": 3}) == [
        {"path": "$.message", "message": "3 is not of type 'string'"}
    ]


def test_structured_content_is_the_output(source: McpToolSource) -> None:
    output = source.get("demo.echo").func(LocalContext(), message="hi")
    assert output["message"] == "hi"


def test_text_content_is_the_output_as_blocks(source: McpToolSource) -> None:
    output = source.get("demo.greet").func(LocalContext(), name="Ada")
    assert output == [{"type": "text", "text": "hello, Ada"}]


def test_progress_and_logs_reach_the_step(source: McpToolSource) -> None:
    ctx = LocalContext()
    assert source.get("demo.count").func(ctx, n=3) == {"counted": 3}
    assert ctx.progress_updates == [(1 / 3, "1 of 3"), (2 / 3, "2 of 3"), (1.0, "3 of 3")]
    assert ctx.logs == ["[info] tick 1", "[info] tick 2", "[info] tick 3"]


def test_an_error_result_fails_with_the_tools_message(source: McpToolSource) -> None:
    with pytest.raises(ToolFailure, match=r"demo.fail failed: .*no luck"):
        source.get("demo.fail").func(LocalContext(), message="no luck")


def test_an_unknown_tool_is_named(source: McpToolSource) -> None:
    with pytest.raises(UnknownTool, match=r"MCP server 'demo' has no tool 'nope'"):
        source.get("demo.nope")


def test_one_session_serves_every_call(source: McpToolSource) -> None:
    echo = source.get("demo.echo")
    pids = {echo.func(LocalContext(), message=str(i))["server_pid"] for i in range(5)}
    assert len(pids) == 1


def test_cancelling_stops_a_hanging_call_and_the_session_goes_on(source: McpToolSource) -> None:
    ctx = LocalContext()
    timer = threading.Timer(0.3, ctx.cancel)
    timer.start()
    with pytest.raises(StepCancelled, match=r"cancelled during the call to demo.hang"):
        source.get("demo.hang").func(ctx)
    assert source.get("demo.echo").func(LocalContext(), message="after")["message"] == "after"


def test_a_server_that_exits_mid_call_fails_the_step_and_is_restarted() -> None:
    source = McpToolSource(McpConfig(servers={"demo": STDIO}))
    try:
        first = source.get("demo.echo").func(LocalContext(), message="a")["server_pid"]
        with pytest.raises(ToolFailure, match=r"MCP server 'demo' .*during the call to 'crash'"):
            source.get("demo.crash").func(LocalContext())
        second = source.get("demo.echo").func(LocalContext(), message="b")["server_pid"]
        assert second != first
    finally:
        source.close()


def test_a_server_gone_between_steps_is_reopened_before_the_next_call() -> None:
    source = McpToolSource(McpConfig(servers={"demo": STDIO}))
    try:
        first = source.get("demo.echo").func(LocalContext(), message="a")["server_pid"]
        session = source.clients._sessions["demo"]
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: not pid_alive(first), what="the server to exit")
        wait_for(lambda: client._connection_closed(session.client), what="the session to see it")
        second = source.get("demo.echo").func(LocalContext(), message="b")["server_pid"]
        assert second != first
    finally:
        source.close()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is gone for the purpose here.
    return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()


def test_a_protocol_error_fails_the_call_and_keeps_the_session(source: McpToolSource) -> None:
    echo = source.get("demo.echo")
    pid = echo.func(LocalContext(), message="a")["server_pid"]
    with pytest.raises(ToolFailure, match=r"^demo.refuse: not today$"):
        source.get("demo.refuse").func(LocalContext())
    assert echo.func(LocalContext(), message="b")["server_pid"] == pid


def test_http_headers_are_sent(http_url: str) -> None:
    server = HttpServer(url=http_url, headers={"Authorization": "Bearer secret"})
    source = McpToolSource(McpConfig(servers={"remote": server}))
    try:
        output = source.get("remote.whoami").func(LocalContext())
        assert output == {"authorization": "Bearer secret"}
    finally:
        source.close()


@pytest.mark.parametrize(
    ("server", "message"),
    [
        (HttpServer(url="http://127.0.0.1:1/mcp"), "MCP server 'gone' .* is unreachable"),
        (StdioServer(command="/nonexistent/mcp-server"), "No such file or directory"),
        (StdioServer(command=sys.executable, args=["-c", "pass"]), "MCP server 'gone' .*"),
    ],
    ids=["http-refused", "no-such-command", "exits-at-once"],
)
def test_an_unreachable_server_fails_the_step_clearly(server: object, message: str) -> None:
    source = McpToolSource(McpConfig(servers={"gone": server}))  # type: ignore[dict-item]
    try:
        with pytest.raises(ToolFailure, match=message):
            source.get("gone.echo")
    finally:
        source.close()


def test_a_broken_configuration_fails_mcp_steps_only() -> None:
    source = McpToolSource(None, "mcp.yaml: servers: Input should be a valid dictionary")
    assert source.handles("demo.echo")
    assert not source.handles("echo")
    with pytest.raises(ToolFailure, match=r"the MCP configuration is invalid: mcp.yaml"):
        source.get("demo.echo")


def test_listing_reports_each_server(tmp_path: Path, http_url: str) -> None:
    config = tmp_path / "mcp.yaml"
    config.write_text(
        f"servers:\n"
        f"  local: {{command: {sys.executable}, args: [{SERVER}]}}\n"
        f"  remote: {{url: '{http_url}'}}\n"
        f"  gone: {{url: 'http://127.0.0.1:1/mcp'}}\n"
    )
    listed = list_servers(config)["servers"]
    names = {t["name"] for t in listed["local"]["tools"]}
    assert {"echo", "count", "greet", "whoami", "refuse", "fail", "hang", "crash"} <= names
    assert {t["name"] for t in listed["remote"]["tools"]} == names
    assert "is unreachable" in listed["gone"]["error"]
    assert list_servers(tmp_path / "absent.yaml") == {
        "error": f"cannot read {tmp_path / 'absent.yaml'}: "
        f"[Errno 2] No such file or directory: '{tmp_path / 'absent.yaml'}'"
    }
