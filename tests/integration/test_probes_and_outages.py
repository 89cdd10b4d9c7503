"""Probes, metrics, keepalives, and what the API does when Redis or the broker is down."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import redis
import websocket
from clients import sse_frames, submit
from conftest import LiveServer, WorkerProcess, serve, wait_for

from devtools.redis_server import free_port
from tasks import keys


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


def test_readyz_needs_redis_and_a_live_worker(
    app_factory: Callable[..., Any], worker: WorkerProcess, settings: Any, r: redis.Redis
) -> None:
    ready = app_factory().test_client()
    wait_for(lambda: ready.get("/readyz").status_code == 200, what="readyz 200")
    assert ready.get("/readyz").json["checks"]["workers"] >= 1

    # A store database no worker writes to: Redis answers, no worker is alive.
    lonely = app_factory(redis_url=settings.redis_url.rsplit("/", 1)[0] + "/5").test_client()
    response = lonely.get("/readyz")
    assert response.status_code == 503 and response.json["reason"] == "no live worker"

    down = app_factory(redis_url=f"redis://127.0.0.1:{free_port()}/0").test_client()
    response = down.get("/readyz")
    assert response.status_code == 503 and response.json["reason"] == "redis unavailable"


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


def test_sse_sends_keepalives_while_a_step_is_silent(
    live_server: LiveServer, worker: WorkerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    from web import streaming

    monkeypatch.setattr(streaming, "SSE_KEEPALIVE_S", 0.2)
    run = submit(live_server.url, "test_silent", {"seconds": 1.0})
    frames = list(sse_frames(live_server.url, run["run_id"]))
    comments = [f[""] for f in frames if "" in f]
    assert "keepalive" in comments
    assert frames[-1]["event"] == "run_finished"


def test_websocket_pings_while_a_step_is_silent(app: Any, worker: WorkerProcess) -> None:
    app.config["SOCK_SERVER_OPTIONS"] = {**app.config["SOCK_SERVER_OPTIONS"], "ping_interval": 0.2}
    with serve(app) as server:
        run = submit(server.url, "test_silent", {"seconds": 1.0})
        conn = websocket.create_connection(
            f"{server.ws_url}/api/runs/{run['run_id']}/ws", timeout=60
        )
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
