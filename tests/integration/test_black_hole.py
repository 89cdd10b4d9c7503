"""A Redis that stops answering (accepts, never replies) makes the API answer 503 fast.

Between the web and the test Redis sits a proxy that can turn into a black hole: no
refusal, no reset, just silence, as across a partition. Every request that needs Redis
must answer 503 within 5 s however many arrive at once (more than the web's pool of
connections), and everything works again as soon as Redis answers, without a restart.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import redis
from blackhole import BlackHoleProxy
from conftest import WorkerProcess, serve, url_of, wait_for

from devtools.redis_server import RedisServer
from web import WEB_REDIS_CONNECTIONS

#: Minutes of real processes and faults: left out of `make test-fast`.
pytestmark = pytest.mark.slow

#: What the API promises while Redis does not answer.
ANSWER_WITHIN_S = 5.0
BODY = {"scenario_id": "hello_sequence", "input": {"name": "Ada"}}


@pytest.fixture
def proxy(redis_server: RedisServer) -> Iterator[BlackHoleProxy]:
    with BlackHoleProxy(redis_server.port) as hole:
        yield hole


def timed(call: Callable[[], httpx.Response]) -> tuple[int, float, str]:
    started = time.monotonic()
    try:
        response = call()
    except httpx.TimeoutException:
        return 0, time.monotonic() - started, "no answer"
    return response.status_code, time.monotonic() - started, response.text


def test_api_and_readyz_answer_503_quickly_while_redis_is_silent_and_recover(
    app_factory: Callable[..., Any],
    proxy: BlackHoleProxy,
    worker: WorkerProcess,
    r: redis.Redis,
    broker: redis.Redis,
) -> None:
    """The store goes through the black hole (the broker does not)."""
    app = app_factory(redis_url=proxy.url(0), broker_url=url_of(broker))
    with serve(app) as web, httpx.Client(base_url=web.url, timeout=20) as http:
        created = http.post("/api/runs", json=BODY)
        assert created.status_code == 202, created.text
        run_id = created.json()["run_id"]
        wait_for(lambda: http.get("/readyz").status_code == 200, what="ready")

        proxy.black_hole()
        calls: list[Callable[[], httpx.Response]] = [
            lambda: http.post("/api/runs", json=BODY),
            lambda: http.get(f"/api/runs/{run_id}"),
            lambda: http.get("/api/runs"),
            lambda: http.get("/readyz"),
        ]
        # Twice the pool, at once: waiting for a connection must not wedge anyone.
        burst = calls * (2 * WEB_REDIS_CONNECTIONS // len(calls) + 1)
        with ThreadPoolExecutor(len(burst)) as pool:
            results = list(pool.map(timed, burst))
        for status, elapsed, text in results:
            assert status == 503, (status, text)
            assert elapsed < ANSWER_WITHIN_S, (elapsed, text)
        assert http.get("/healthz").status_code == 200

        proxy.forward()
        wait_for(
            lambda: http.get(f"/api/runs/{run_id}").status_code == 200,
            timeout=10,
            what="the run readable again",
        )
        wait_for(lambda: http.get("/readyz").status_code == 200, timeout=10, what="ready again")
        assert http.get("/api/runs").status_code == 200
        again = http.post("/api/runs", json=BODY)
        assert again.status_code == 202, again.text


def test_readyz_answers_503_quickly_when_the_first_connection_meets_the_black_hole(
    app_factory: Callable[..., Any], proxy: BlackHoleProxy, r: redis.Redis
) -> None:
    """No connection was ever made: the handshake itself meets the silence."""
    proxy.black_hole()
    client = app_factory(redis_url=proxy.url(0)).test_client()
    started = time.monotonic()
    response = client.get("/readyz")
    assert response.status_code == 503 and response.json["reason"] == "redis unavailable"
    assert time.monotonic() - started < ANSWER_WITHIN_S


def test_post_answers_503_quickly_while_the_broker_is_silent_and_recovers(
    app_factory: Callable[..., Any],
    proxy: BlackHoleProxy,
    r: redis.Redis,
    broker: redis.Redis,
) -> None:
    """The broker goes through the black hole (the store does not): the run cannot be
    sent, so the POST answers 503 in time and leaves no run behind."""
    app = app_factory(broker_url=proxy.url(url_of(broker).rsplit("/", 1)[1]))
    with serve(app) as web, httpx.Client(base_url=web.url, timeout=20) as http:
        first = http.post("/api/runs", json=BODY)
        assert first.status_code == 202, first.text

        proxy.black_hole()
        status, elapsed, text = timed(lambda: http.post("/api/runs", json=BODY))
        assert status == 503, (status, text)
        assert elapsed < ANSWER_WITHIN_S, (elapsed, text)
        assert r.zrange("stepstream:runs", 0, -1) == [first.json()["run_id"]]

        proxy.forward()
        wait_for(
            lambda: http.post("/api/runs", json=BODY).status_code == 202,
            timeout=15,
            what="runs to be sent again",
        )


def test_a_run_recorded_though_answered_503_is_deleted_once_redis_answers(
    app_factory: Callable[..., Any], proxy: BlackHoleProxy, r: redis.Redis, broker: redis.Redis
) -> None:
    """Redis records the run but its reply is lost: the client hears 503 (nothing was
    created, as far as it knows), so the run must not stay and be started later."""
    app = app_factory(redis_url=proxy.url(0), broker_url=url_of(broker))
    with serve(app) as web, httpx.Client(base_url=web.url, timeout=20) as http:
        assert http.get("/api/runs").status_code == 200  # connections made before
        proxy.lose_replies()
        status, elapsed, _ = timed(lambda: http.post("/api/runs", json=BODY))
        assert status == 503 and elapsed < ANSWER_WITHIN_S
        (run_id,) = wait_for(lambda: r.zrange("stepstream:runs", 0, -1), what="the run recorded")
        proxy.forward()
        wait_for(lambda: not r.exists(f"stepstream:run:{{{run_id}}}"), what="the run deleted")
        assert r.zcard("stepstream:runs") == 0 and r.zcard("stepstream:attempts:dispatch") == 0
        assert broker.llen("stepstream") == 0
