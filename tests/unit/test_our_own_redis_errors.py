"""Errors of our own use of the Redis client are bugs, not outages: a `WatchError`
that escaped a compare-and-set loop, or a `DataError`, reaching the web is a 500 with
its traceback logged, never a 503 that tells the client to retry a request that can
only fail the same way; `backend_errors` lets both through untranslated.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis
from flask import Flask

from tasks.redis_client import backend_errors
from web import errors


@pytest.fixture
def client() -> Any:
    app = Flask(__name__)
    errors.register(app)

    @app.get("/cas-loop-bug")
    def cas_loop_bug() -> Any:
        raise redis.WatchError("Watched variable changed.")

    return app.test_client()


def test_an_escaped_watch_conflict_is_an_internal_error(
    client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    response = client.get("/cas-loop-bug")
    assert response.status_code == 500, response.get_json()
    assert response.get_json()["error"]["code"] == "internal"
    assert any(r.exc_info for r in caplog.records), "the bug's traceback is logged"


@pytest.mark.parametrize("error", [redis.WatchError("changed"), redis.DataError("bad value")])
def test_backend_errors_leaves_our_own_errors_alone(error: redis.RedisError) -> None:
    with pytest.raises(type(error)), backend_errors:
        raise error
