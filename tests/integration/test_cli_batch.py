"""`stepstream run SCENARIO --inputs FILE.jsonl`: one run per line, sent in batches
(`POST /api/runs/batch`), their ids printed one a line."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner, Result

from client.cli import main
from tasks import keys
from tests.conftest import LiveServer, serve, url_of


@pytest.fixture
def server(app_factory: Callable[..., Any], r: redis.Redis, broker: redis.Redis) -> Any:
    """A web server whose runs stay queued (a broker no worker reads)."""
    with serve(app_factory(broker_url=url_of(broker))) as live:
        yield live


def cli(server: LiveServer, *args: str) -> Result:
    return CliRunner().invoke(main, ["--url", server.url, *args], catch_exceptions=False)


def jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_each_line_starts_a_run_and_its_id_is_printed(
    server: LiveServer, r: redis.Redis, broker: redis.Redis, tmp_path: Path
) -> None:
    names = [f"n{i}" for i in range(5)]
    source = jsonl(tmp_path / "in.jsonl", [json.dumps({"name": n}) for n in names] + [""])
    result = cli(server, "run", "hello_sequence", "--inputs", str(source))
    assert result.exit_code == 0, result.output
    ids = result.stdout.split()
    assert len(ids) == 5 and sorted(ids) == sorted(r.zrange(keys.runs_index(), 0, -1))
    inputs = [json.loads(r.hget(keys.run(i), "input") or "null") for i in ids]
    assert [i["name"] for i in inputs] == names  # in the file's order
    assert "started 5 runs of hello_sequence (1 request)" in result.stderr
    assert broker.llen("stepstream") == 5


def test_many_lines_go_in_chunks(
    server: LiveServer, r: redis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from client import api

    monkeypatch.setattr(api, "BATCH_MAX", 4)
    source = jsonl(tmp_path / "in.jsonl", [json.dumps({"name": f"n{i}"}) for i in range(10)])
    result = cli(server, "run", "hello_sequence", "--inputs", str(source))
    assert result.exit_code == 0, result.output
    assert len(result.stdout.split()) == 10
    assert "started 10 runs of hello_sequence (3 requests)" in result.stderr
    assert r.zcard(keys.runs_index()) == 10


def test_a_line_that_is_not_json_is_named_and_nothing_is_sent(
    server: LiveServer, r: redis.Redis, tmp_path: Path
) -> None:
    source = jsonl(tmp_path / "in.jsonl", ['{"name": "a"}', "", '{"name": ', '{"name": "c"}'])
    result = cli(server, "run", "hello_sequence", "--inputs", str(source))
    assert result.exit_code == 2
    assert "line 3: not JSON" in result.stderr
    assert r.zcard(keys.runs_index()) == 0


def test_a_line_that_is_not_an_object_is_named(server: LiveServer, tmp_path: Path) -> None:
    source = jsonl(tmp_path / "in.jsonl", ['{"name": "a"}', "[1, 2]"])
    result = cli(server, "run", "hello_sequence", "--inputs", str(source))
    assert result.exit_code == 2
    assert "line 2: must be a JSON object, not list" in result.stderr


def test_an_input_the_server_refuses_is_named_by_its_line(
    server: LiveServer, r: redis.Redis, tmp_path: Path
) -> None:
    source = jsonl(tmp_path / "in.jsonl", ['{"name": "a"}', "", '{"name": ""}'])
    result = cli(server, "run", "hello_sequence", "--inputs", str(source))
    assert result.exit_code == 1
    assert "line 3: $.name:" in result.stderr
    assert r.zcard(keys.runs_index()) == 0


def test_inputs_from_stdin(server: LiveServer, r: redis.Redis) -> None:
    result = CliRunner().invoke(
        main,
        ["--url", server.url, "run", "hello_sequence", "--inputs", "-"],
        input='{"name": "a"}\n{"name": "b"}\n',
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert len(result.stdout.split()) == 2


def test_inputs_and_follow_do_not_mix(server: LiveServer, tmp_path: Path) -> None:
    source = jsonl(tmp_path / "in.jsonl", ['{"name": "a"}'])
    result = cli(server, "run", "hello_sequence", "--inputs", str(source), "--follow")
    assert result.exit_code == 2 and "cannot be combined" in result.stderr
