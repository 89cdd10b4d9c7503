"""The web and every worker warn at start when Redis may evict keys.

Any `maxmemory-policy` but `noeviction` lets a full Redis drop a run's keys and leave
the run `running` for ever. Tested against a real Redis of the test's own, set with
`CONFIG SET maxmemory-policy allkeys-lru`, and against one that refuses CONFIG (as
managed Redis services do): then the warning says the policy could not be checked.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from conftest import start_worker, wait_for
from stacks import layout

from devtools.redis_server import RedisServer


@pytest.fixture
def lru_redis(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(port=0, data_dir=tmp_path / "redis") as server:
        client = redis.Redis.from_url(server.url)
        try:
            client.config_set("maxmemory-policy", "allkeys-lru")
        finally:
            client.close()
        yield server


def test_the_web_warns_when_redis_may_evict_keys(
    app_factory: Callable[..., Any], lru_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("WARNING")
    app = app_factory(redis_url=lru_redis.url, broker_url=lru_redis.url)
    warnings = [rec.getMessage() for rec in caplog.records if rec.levelname == "WARNING"]
    assert any("maxmemory-policy is allkeys-lru, not noeviction" in w for w in warnings), warnings
    assert app.test_client().get("/api/runs").status_code == 200


def test_the_web_is_quiet_about_noeviction(
    app_factory: Callable[..., Any], r: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    assert r.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
    caplog.set_level("WARNING")
    app_factory()
    assert "maxmemory-policy" not in caplog.text


def test_the_web_says_when_it_cannot_check_and_starts_anyway(
    app_factory: Callable[..., Any], lru_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A user whose ACL refuses CONFIG, as managed Redis services do."""
    admin = redis.Redis.from_url(lru_redis.url)
    try:
        admin.acl_setuser(
            "app", enabled=True, passwords=["+secret"], keys=["*"], channels=["*"],
            commands=["+@all", "-config"],
        )  # fmt: skip
    finally:
        admin.close()
    url = lru_redis.url.replace("redis://", "redis://app:secret@")
    caplog.set_level("WARNING")
    app = app_factory(redis_url=url, broker_url=url)
    assert "could not check Redis' maxmemory-policy" in caplog.text
    assert "NOPERM" in caplog.text or "permission" in caplog.text.lower()
    assert app.test_client().get("/api/runs").status_code == 200


@pytest.mark.slow
def test_a_worker_warns_when_redis_may_evict_keys(
    base_env: dict[str, str], lru_redis: RedisServer, tmp_path: Path
) -> None:
    env = {
        **base_env,
        "STEPSTREAM_REDIS_URL": layout(lru_redis.url)[0],
        "STEPSTREAM_BROKER_URL": layout(lru_redis.url)[1],
    }
    worker = start_worker(env, "evicting", tmp_path, concurrency=1)
    try:
        wait_for(
            lambda: "maxmemory-policy is allkeys-lru, not noeviction" in worker.log(),
            what=f"the worker's warning in {worker.log()[-2000:]}",
        )
    finally:
        worker.stop()
