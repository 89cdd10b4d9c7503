"""Probes, metrics, keepalives, and what the API does when Redis or the broker is down."""

from __future__ import annotations

import http.client
import json
import random
import re
import string
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import websocket
from clients import sse_connection, submit, ws_connection
from conftest import LiveServer, WorkerProcess, serve, start_web, wait_for

from devtools.redis_server import free_port
from tasks import keys
from tasks.config import Settings


def test_healthz_and_metrics(client: Any) -> None:
    assert client.get("/healthz").status_code == 200
    client.get("/api/scenarios")
    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    assert metrics.content_type.startswith("text/plain")
    text = metrics.get_data(as_text=True)
    assert 'stepstream_http_requests_total{method="GET",route="/api/scenarios",status="200"}' in (
        text
    )


@pytest.mark.slow
def test_readyz_needs_redis_and_a_live_worker(
    app_factory: Callable[..., Any], worker: WorkerProcess, quiet_db: str, r: redis.Redis
) -> None:
    ready = app_factory().test_client()
    wait_for(lambda: ready.get("/readyz").status_code == 200, what="readyz 200")
    assert ready.get("/readyz").json["checks"]["workers"] >= 1

    # A store database no worker writes to: Redis answers, no worker is alive.
    lonely = app_factory(redis_url=quiet_db).test_client()
    response = lonely.get("/readyz")
    assert response.status_code == 503 and response.json["reason"] == "no live worker"

    down = app_factory(redis_url=f"redis://127.0.0.1:{free_port()}/0").test_client()
    response = down.get("/readyz")
    assert response.status_code == 503 and response.json["reason"] == "redis unavailable"


@pytest.mark.slow
def test_redis_down_gives_503_not_500(app_factory: Callable[..., Any]) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    client = app_factory(redis_url=url, broker_url=url).test_client()
    for response in (
        client.get("/api/runs/some-run"),
        client.get("/api/runs"),
        client.post("/api/runs", json={"scenario_id": "hello_sequence", "input": {"name": "x"}}),
        client.get("/api/runs/some-run/events", headers={"Accept": "application/json"}),
    ):
        assert response.status_code == 503, response.data
        assert response.json["error"]["code"] == "unavailable"
    assert client.get("/api/scenarios").status_code == 200  # needs no Redis
    assert client.get("/healthz").status_code == 200


def test_broker_down_gives_503_and_leaves_nothing_behind(
    app_factory: Callable[..., Any], r: redis.Redis
) -> None:
    client = app_factory(broker_url=f"redis://127.0.0.1:{free_port()}/0").test_client()
    response = client.post(
        "/api/runs",
        json={"scenario_id": "hello_sequence", "input": {"name": "x"}},
        headers={"Idempotency-Key": "k-broker-down"},
    )
    assert response.status_code == 503
    assert response.json["error"]["code"] == "unavailable"
    assert r.keys("stepstream:run:*") == []
    assert r.zcard(keys.runs_index()) == 0
    assert r.get(keys.idempotency("k-broker-down")) is None
    assert r.xlen(keys.all_events()) == 0  # not even announced to dashboards


@pytest.mark.slow
def test_sse_sends_keepalives_while_a_step_is_silent(
    live_server: LiveServer, worker: WorkerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    from web import streaming

    monkeypatch.setattr(streaming, "SSE_KEEPALIVE_S", 0.2)
    run = submit(live_server.url, "test_silent", {"seconds": 1.0})
    comments: list[str] = []
    with sse_connection(live_server.url, run["run_id"], on_comment=comments.append) as stream:
        messages = list(stream.messages())
    assert "keepalive" in comments
    assert messages[-1].event == "run_finished"


@pytest.mark.slow
def test_websocket_pings_while_a_step_is_silent(app: Any, worker: WorkerProcess) -> None:
    app.config["SOCK_SERVER_OPTIONS"] = {**app.config["SOCK_SERVER_OPTIONS"], "ping_interval": 0.2}
    with serve(app) as server:
        run = submit(server.url, "test_silent", {"seconds": 1.0})
        # The raw frames, pings included: the connection underneath the client's.
        stream = ws_connection(server.url, run["run_id"], timeout=60)
        conn = stream.conn
        opcodes, texts = [], []
        try:
            while websocket.ABNF.OPCODE_CLOSE not in opcodes:
                try:
                    opcode, data = conn.recv_data(control_frame=True)
                except (BrokenPipeError, ConnectionResetError):
                    # The client answers a ping that crossed the server's close: once
                    # run_finished is in, the server has hung up and that is the end.
                    assert texts and json.loads(texts[-1])["type"] == "run_finished"
                    break
                opcodes.append(opcode)
                if opcode == websocket.ABNF.OPCODE_TEXT:
                    texts.append(data)
        finally:
            conn.close()
    assert websocket.ABNF.OPCODE_PING in opcodes
    assert len(texts) == 6  # queued, started, started/progress/finished of one step, finished


# -- open probes reveal nothing (SPEC §14) -------------------------------------------------------


def series(metrics_text: str, name: str) -> list[str]:
    return [line.split(" ")[0] for line in metrics_text.splitlines() if line.startswith(name + "{")]


def test_invented_methods_and_paths_do_not_grow_metrics(
    base_env: dict[str, str], tmp_path: Path, r: redis.Redis
) -> None:
    """200 requests with made-up methods to made-up paths (and to real routes) add at
    most a handful of series, all labelled from fixed sets, under gunicorn."""
    web = start_web(base_env, tmp_path, "web-metrics")
    try:
        host, port = web.url.removeprefix("http://").split(":")
        rng = random.Random(13)

        def invented(n: int) -> None:
            for _ in range(n):
                method = "".join(rng.choices(string.ascii_uppercase, k=rng.randint(3, 12)))
                path = rng.choice(["/healthz", "/api/runs", f"/x{rng.randrange(10**9)}"])
                conn = http.client.HTTPConnection(host, int(port), timeout=10)
                try:
                    conn.request(method, f"{path}?q={rng.randrange(10**9)}")
                    conn.getresponse().read()
                finally:
                    conn.close()

        def counted() -> list[str]:
            return series(
                httpx.get(f"{web.url}/metrics", timeout=10).text, "stepstream_http_requests_total"
            )

        invented(20)
        counted()  # a scrape counts itself once it has answered
        before = counted()
        invented(200)
        after = counted()
        assert len(after) == len(before), sorted(set(after) - set(before))
        labels = [dict(re.findall(r'(\w+)="([^"]*)"', s)) for s in after]
        allowed_methods = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other"}
        assert {label["method"] for label in labels} <= allowed_methods
        assert "other" in {label["method"] for label in labels}
        assert all(
            label["route"] == "unmatched" or label["route"].startswith("/") for label in labels
        )
        assert not [label for label in labels if label["route"].startswith("/x")]
    finally:
        web.kill()


@pytest.mark.slow
def test_readyz_shows_mcp_states_not_urls_credentials_or_errors(
    base_env: dict[str, str], tmp_path: Path, r: redis.Redis
) -> None:
    """A server whose URL carries credentials, and one that cannot start: `/readyz`, which
    is open, says each is unavailable and nothing else; the details are for `/api`."""
    port = free_port()
    config = tmp_path / "mcp.yaml"
    config.write_text(
        "servers:\n"
        f"  remote: {{url: 'https://user:hunter2@127.0.0.1:{port}/mcp',"
        " headers: {Authorization: 'Bearer hdr-hunter2'}}\n"
        "  local: {command: /nonexistent/bin/hunter2-server, args: [--password, hunter2]}\n"
    )
    env = {**base_env, "STEPSTREAM_MCP_CONFIG": str(config)}
    web = start_web(env, tmp_path, "web-readyz")
    try:

        def listed() -> Any:
            body = httpx.get(f"{web.url}/readyz", timeout=10).json()
            mcp = body["checks"]["mcp"]
            return body if "not listed yet" not in mcp.values() else None

        body = wait_for(listed, timeout=60, what="both MCP servers listed")
        assert body["checks"]["mcp"] == {"local": "unavailable", "remote": "unavailable"}
        text = json.dumps(body)
        for secret in ("hunter2", "user", "https", str(port), "nonexistent", "Error", "rror"):
            assert secret not in text, text
    finally:
        web.kill()

    # A broken configuration file: its state, not the parser's message or the path.
    config.write_text("servers:\n  demo: {command: x, url: 'http://u:hunter2@x/mcp'}\n")
    from web import create_app

    app = create_app(Settings.from_env(env))
    try:
        with serve(app) as server:
            body = httpx.get(f"{server.url}/readyz", timeout=10).json()
    finally:
        app.extensions["stepstream"].mcp.stop()
    assert body["checks"]["mcp"] == {"config": "invalid"}
    assert "hunter2" not in json.dumps(body) and str(config) not in json.dumps(body)


def test_readyz_without_redis_shows_no_url_or_exception(app_factory: Callable[..., Any]) -> None:
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    with serve(app_factory(redis_url=url, broker_url=url)) as server:
        response = httpx.get(f"{server.url}/readyz", timeout=10)
    body = response.json()
    assert response.status_code == 503
    assert body == {
        "status": "not_ready",
        "reason": "redis unavailable",
        "checks": {"redis": "unavailable"},
    }
