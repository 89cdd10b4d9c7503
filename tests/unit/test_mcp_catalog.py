"""The web's record of the MCP servers' tools: what a listing changes, and what not."""

from __future__ import annotations

from pathlib import Path

from tasks.mcp_tools.catalog import KnownTools, McpCatalog

ECHO = {"name": "echo", "description": "Echo.", "input_schema": {"type": "object"}}
BAD = {"name": "bad", "description": "", "input_schema": {"type": "no-such-type"}}


def catalog(tmp_path: Path) -> McpCatalog:
    path = tmp_path / "mcp.yaml"
    path.write_text("servers:\n  demo: {command: x}\n  web: {url: 'http://x/mcp'}\n")
    return McpCatalog(path, refresh_s=60)


def test_listed_tools_are_known_and_summarised(tmp_path: Path) -> None:
    mcp = catalog(tmp_path)
    assert mcp.knows("demo.echo") is None  # not listed yet: nobody knows
    assert mcp.knows("other.echo") is False
    assert mcp.status() == {"demo": "not listed yet", "web": "not listed yet"}
    mcp._take({"servers": {"demo": {"tools": [ECHO, BAD]}, "web": {"error": "refused"}}})
    assert mcp.knows("demo.echo") is True
    assert mcp.knows("demo.nope") is False
    assert mcp.knows("web.anything") is None  # never listed: still unknown
    # A tool with an unusable schema is left out, not the server.
    assert [t["name"] for t in mcp.summaries()] == ["demo.echo"]
    assert mcp.status() == {"demo": "ok: 1 tool", "web": "unavailable: refused"}
    assert "demo.echo" in KnownTools({"echo"}, mcp)
    assert "demo.nope" not in KnownTools({"echo"}, mcp)


def test_a_server_that_stops_answering_keeps_its_tools_marked(tmp_path: Path) -> None:
    mcp = catalog(tmp_path)
    mcp._take({"servers": {"demo": {"tools": [ECHO]}, "web": {"tools": []}}})
    mcp._take({"servers": {"demo": {"error": "gone"}, "web": {"tools": []}}})
    (echo,) = mcp.summaries()
    assert echo["available"] is False
    assert echo["error"] == "gone"
    assert mcp.knows("demo.echo") is True


def test_only_a_change_of_tools_bumps_the_version(tmp_path: Path) -> None:
    mcp = catalog(tmp_path)
    mcp._take({"servers": {"demo": {"tools": [ECHO]}, "web": {"tools": []}}})
    version = mcp.version
    mcp._take({"servers": {"demo": {"tools": [ECHO]}, "web": {"tools": []}}})
    assert mcp.version == version  # scenarios are not checked again for nothing
    mcp._take({"servers": {"demo": {"tools": []}, "web": {"tools": []}}})
    assert mcp.version == version + 1


def test_a_python_tool_of_the_same_name_hides_the_mcp_one(tmp_path: Path) -> None:
    mcp = catalog(tmp_path)
    mcp._take({"servers": {"demo": {"tools": [ECHO]}, "web": {"tools": []}}})
    assert mcp.summaries(shadowed={"demo.echo"}) == []
