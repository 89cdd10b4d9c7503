"""Tools without Redis or Celery: the registry, plugins, and each built-in tool."""

from __future__ import annotations

import json
import logging
import re
import socket
import textwrap
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tasks import egress
from tasks.errors import StepCancelled, ToolFailure, UnknownTool
from tasks.tools import (
    BUILTIN_TOOLS,
    LocalContext,
    Tool,
    ToolContext,
    ToolRegistry,
    builtin,
    default_registry,
    load_entry_points,
    tool,
)


def _tools() -> ToolRegistry:
    return ToolRegistry(BUILTIN_TOOLS)


def _run(name: str, ctx: LocalContext | None = None, /, **input: Any) -> Any:
    found = _tools().get(name)
    assert found.input_errors(input) == []
    return found.func(ctx or LocalContext(), **input)


# Registry


def test_tool_decorator_builds_a_tool_with_its_summary() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}

    @tool("acme.double", description="Double n.", input_schema=schema)
    def double(ctx: ToolContext, /, *, n: int) -> int:
        return n * 2

    assert isinstance(double, Tool)
    assert double.func(LocalContext(), n=4) == 8
    assert double.summary() == {
        "name": "acme.double",
        "description": "Double n.",
        "input_schema": schema,
        "source": "python",
        "available": True,
    }


@pytest.mark.parametrize("name", ["", "Echo", "1tool", "has-dash", "trailing.", "a..b", "a b"])
def test_bad_tool_names_are_rejected(name: str) -> None:
    with pytest.raises(ValueError, match="invalid tool name"):
        tool(name, description="", input_schema={})(lambda ctx: None)


def test_invalid_input_schema_is_rejected() -> None:
    with pytest.raises(ValueError, match="invalid input_schema"):
        tool("bad_schema", description="", input_schema={"type": "nonsense"})(lambda ctx: None)


def test_registry_rejects_duplicates_and_lists_sorted() -> None:
    registry = _tools()
    with pytest.raises(ValueError, match="already registered"):
        registry.register(builtin.echo)
    assert registry.names() == ["echo", "fail", "http_request", "sleep"]
    assert list(registry) == registry.names()
    assert [item.name for item in registry.list()] == registry.names()
    assert "sleep" in registry
    assert "nope" not in registry
    assert registry.get("echo") is builtin.echo


def test_unknown_tool_raises_unknown_tool() -> None:
    with pytest.raises(UnknownTool, match="unknown tool 'nope'") as caught:
        _tools().get("nope")
    assert caught.value.code == "unknown_tool"


def test_default_registry_has_the_builtins() -> None:
    assert {"echo", "sleep", "fail", "http_request"} <= set(default_registry())


def test_input_errors_give_json_paths_sorted() -> None:
    errors = builtin.sleep.input_errors({"seconds": -1, "ticks": 0, "extra": True})
    assert [error["path"] for error in errors] == ["$", "$.seconds", "$.ticks"]
    assert "extra" in errors[0]["message"]
    assert all(error["message"] for error in errors)


def test_input_errors_reach_nested_values() -> None:
    errors = builtin.http_request.input_errors(
        {"url": "ftp://example.com", "method": "FETCH", "headers": {"X-A": 1}}
    )
    assert [error["path"] for error in errors] == ["$.headers['X-A']", "$.method", "$.url"]
    assert builtin.sleep.input_errors({}) == [
        {"path": "$", "message": "'seconds' is a required property"}
    ]


# echo, sleep, fail


def test_echo_returns_its_input() -> None:
    value = {"a": 1, "nested": {"list": [1, "two"]}, "ctx": "not the context"}
    assert _run("echo", **value) == value


def test_sleep_reports_every_tick() -> None:
    ctx = LocalContext()
    assert _run("sleep", ctx, seconds=0.05, ticks=5) == {"slept": 0.05}
    assert ctx.progress_updates == [
        (0.2, "1/5"),
        (0.4, "2/5"),
        (0.6, "3/5"),
        (0.8, "4/5"),
        (1.0, "5/5"),
    ]


def test_sleep_defaults_to_ten_ticks() -> None:
    ctx = LocalContext()
    assert _run("sleep", ctx, seconds=0) == {"slept": 0}
    assert len(ctx.progress_updates) == 10


class _SignallingContext(LocalContext):
    """Lets the test wait for the tool's first progress report instead of sleeping."""

    def __init__(self) -> None:
        super().__init__()
        self.first_progress = threading.Event()

    def progress(self, fraction: float, message: str = "") -> None:
        super().progress(fraction, message)
        self.first_progress.set()


def test_sleep_stops_early_when_cancelled() -> None:
    ctx = _SignallingContext()
    raised: list[StepCancelled] = []

    def work() -> None:
        with pytest.raises(StepCancelled) as excinfo:
            _run("sleep", ctx, seconds=5, ticks=50)
        raised.append(excinfo.value)

    worker = threading.Thread(target=work, daemon=True)
    started = time.monotonic()
    worker.start()
    assert ctx.first_progress.wait(timeout=5)
    ctx.cancel()
    worker.join(timeout=2)

    assert not worker.is_alive()
    assert time.monotonic() - started < 2
    assert len(raised) == 1
    assert raised[0].message.startswith("cancelled after sleeping 0.")
    assert len(ctx.progress_updates) < 50


def test_fail_raises_tool_failure() -> None:
    with pytest.raises(ToolFailure, match=r"^boom$"):
        _run("fail", message="boom")


def test_local_context_rejects_progress_out_of_range() -> None:
    with pytest.raises(ValueError):
        LocalContext().progress(1.5)


# http_request against a real local server


class _Handler(BaseHTTPRequestHandler):
    release: threading.Event  # set by the fixture; lets /slow hang without sleeping

    def do_GET(self) -> None:
        if self.path == "/json":
            self._reply(200, "application/json; charset=utf-8", b'{"ok": true, "n": [1, 2]}')
        elif self.path == "/text":
            self._reply(200, "text/plain; charset=utf-8", "héllo".encode())
        elif self.path == "/bad-json":
            self._reply(200, "application/json", b"{not json")
        elif self.path == "/slow":
            self.release.wait(timeout=10)
            self._reply(200, "text/plain", b"late")
        else:
            self._reply(404, "application/json", b'{"error": "not found"}')

    def do_POST(self) -> None:
        received = self.rfile.read(int(self.headers["Content-Length"]))
        echoed = {
            "method": self.command,
            "content_type": self.headers["Content-Type"],
            "x_token": self.headers["X-Token"],
            "body": json.loads(received),
        }
        self._reply(201, "application/json", json.dumps(echoed).encode())

    def _reply(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Mixed-Case", "yes")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep pytest output clean


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    release = threading.Event()
    handler = type("Handler", (_Handler,), {"release": release})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        release.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # http_request ignores proxy variables; none are left to mislead other clients.
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    # The local server is on loopback, which the egress policy opens only when asked.
    monkeypatch.setenv("STEPSTREAM_HTTP_ALLOW", "127.0.0.1")
    egress.reset_default_policy()
    yield
    egress.reset_default_policy()


def test_http_request_parses_json_body(server_url: str) -> None:
    ctx = LocalContext()
    result = _run("http_request", ctx, url=f"{server_url}/json")
    assert result["status"] == 200
    assert result["body"] == {"ok": True, "n": [1, 2]}
    assert result["headers"]["x-mixed-case"] == "yes"
    assert result["headers"]["content-type"].startswith("application/json")
    assert len(ctx.logs) == 1
    assert ctx.logs[0].startswith(f"GET {server_url}/json -> 200 in ")
    assert ctx.logs[0].endswith(" ms")


def test_http_request_returns_text_body(server_url: str) -> None:
    result = _run("http_request", url=f"{server_url}/text")
    assert result["body"] == "héllo"


def test_http_request_returns_mislabelled_json_as_text(server_url: str) -> None:
    assert _run("http_request", url=f"{server_url}/bad-json")["body"] == "{not json"


def test_http_request_returns_non_2xx_status(server_url: str) -> None:
    result = _run("http_request", url=f"{server_url}/missing")
    assert result["status"] == 404
    assert result["body"] == {"error": "not found"}


def test_http_request_posts_json(server_url: str) -> None:
    result = _run(
        "http_request",
        url=f"{server_url}/things",
        method="POST",
        headers={"X-Token": "abc"},
        json={"name": "x", "tags": [1, None]},
    )
    assert result["status"] == 201
    assert result["body"] == {
        "method": "POST",
        "content_type": "application/json",
        "x_token": "abc",
        "body": {"name": "x", "tags": [1, None]},
    }


def test_http_request_head_has_empty_body(server_url: str) -> None:
    # http.server answers HEAD with 501 unless do_HEAD exists; still a result, not a failure.
    result = _run("http_request", url=f"{server_url}/json", method="HEAD")
    assert result["status"] == 501
    assert result["body"] == ""


def test_http_request_connection_refused_is_tool_failure() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/"
    with pytest.raises(ToolFailure, match="^" + re.escape(f"GET {url} failed: ")):
        _run("http_request", url=url, timeout_s=5)


def test_http_request_timeout_is_tool_failure(server_url: str) -> None:
    with pytest.raises(ToolFailure, match=r"^GET .*/slow failed: timed out after 0\.2 s$"):
        _run("http_request", url=f"{server_url}/slow", timeout_s=0.2)


def test_http_request_caps_the_body(server_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(builtin, "MAX_BODY_BYTES", 8)
    with pytest.raises(ToolFailure, match="response body exceeds 8 bytes"):
        _run("http_request", url=f"{server_url}/json")


def test_http_request_hides_url_credentials(server_url: str) -> None:
    ctx = LocalContext()
    url = server_url.replace("http://", "http://user:secret@") + "/json"
    _run("http_request", ctx, url=url)
    assert "secret" not in ctx.logs[0]


def test_http_request_refuses_loopback_unless_allowed(
    server_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STEPSTREAM_HTTP_ALLOW")
    egress.reset_default_policy()
    url = server_url.replace("http://", "http://user:secret@") + "/json"
    with pytest.raises(ToolFailure) as refused:
        _run("http_request", url=url)
    assert refused.value.message == (
        f"http_request refused {server_url}/json: 127.0.0.1 is a loopback address; "
        "STEPSTREAM_HTTP_ALLOW opens it"
    )


# Entry points


def test_entry_points_register_good_tools_and_skip_broken_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "stepstream_test_plugin.py").write_text(
        textwrap.dedent(
            """
            from tasks.tools import tool

            @tool("plugin.hello", description="Say hello.", input_schema={"type": "object"})
            def hello(ctx, /):
                return "hello"

            @tool("echo", description="Clashes with the built-in.", input_schema={})
            def clash(ctx, /):
                return None

            NOT_A_TOOL = 42
            """
        )
    )
    dist_info = tmp_path / "stepstream_test_plugin-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: stepstream-test-plugin\nVersion: 1.0\n"
    )
    (dist_info / "entry_points.txt").write_text(
        textwrap.dedent(
            """
            [stepstream.tools]
            good = stepstream_test_plugin:hello
            missing = stepstream_test_plugin_missing:TOOL
            wrong_type = stepstream_test_plugin:NOT_A_TOOL
            duplicate = stepstream_test_plugin:clash
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = _tools()

    with caplog.at_level(logging.WARNING, logger="tasks.tools.registry"):
        added = load_entry_points(registry)

    # Other installed plugins (the suite's own test tools) may load too; count this one's.
    assert [item.name for item in added if item.name.startswith("plugin.")] == ["plugin.hello"]
    assert registry.get("plugin.hello").func(LocalContext()) == "hello"
    assert registry.get("echo") is builtin.echo
    warnings = {record.getMessage() for record in caplog.records}
    assert len(warnings) == 3
    for name, reason in [
        ("missing", "ModuleNotFoundError"),
        ("wrong_type", "expected a Tool or an iterable of Tools, got int"),
        ("duplicate", "a tool named 'echo' is already registered"),
    ]:
        assert any(f"'{name}'" in message and reason in message for message in warnings)
