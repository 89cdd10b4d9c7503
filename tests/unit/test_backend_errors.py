"""The client libraries' errors become the project's in one place (redis_client), and the
API answers them as it always did: 503, code `unavailable`, never the library's text."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from flask import Flask
from kombu.exceptions import OperationalError

from tasks.errors import BackendUnavailable, BackendUnreachable, StepstreamError
from tasks.redis_client import UNAVAILABLE, backend_errors
from web import errors


@pytest.mark.parametrize(
    ("low_level", "expected"),
    [
        (redis.ConnectionError("refused"), BackendUnreachable),
        (redis.TimeoutError("timed out"), BackendUnreachable),
        (redis.BusyLoadingError("loading"), BackendUnreachable),
        (OperationalError("broker gone"), BackendUnreachable),
        (ConnectionResetError("reset"), BackendUnreachable),
        (redis.ResponseError("OOM command not allowed"), BackendUnavailable),
        (redis.ReadOnlyError("read only replica"), BackendUnavailable),
    ],
)
def test_low_level_errors_become_backend_errors(
    low_level: Exception, expected: type[BackendUnavailable]
) -> None:
    with pytest.raises(BackendUnavailable) as caught, backend_errors:
        raise low_level
    assert type(caught.value) is expected
    assert isinstance(caught.value, StepstreamError)
    assert caught.value.code == "unavailable"
    assert caught.value.cause is low_level and caught.value.__cause__ is low_level
    assert str(low_level) in caught.value.message
    assert not isinstance(caught.value, UNAVAILABLE)  # never translated twice


def test_other_errors_and_watch_conflicts_pass_unchanged() -> None:
    for other in (ValueError("bad"), redis.WatchError("changed"), StepstreamError("mine")):
        with pytest.raises(type(other)) as caught, backend_errors:
            raise other
        assert caught.value is other


def test_as_a_decorator_it_keeps_the_result_and_translates() -> None:
    @backend_errors
    def fine(x: int) -> int:
        return x + 1

    @backend_errors
    def down() -> None:
        raise redis.ConnectionError("refused")

    assert fine(1) == 2
    with pytest.raises(BackendUnreachable):
        down()


@pytest.fixture
def client() -> Any:
    app = Flask(__name__)
    errors.register(app)

    @app.get("/translated")
    def translated() -> None:
        with backend_errors:
            raise redis.ConnectionError("Error 111 connecting to secret-host:6379")

    @app.get("/raw")
    def raw() -> None:
        raise redis.ResponseError("OOM command not allowed")

    @app.get("/said")
    def said() -> None:
        raise BackendUnavailable("could not record the run: reset")

    return app.test_client()


def test_the_api_answers_a_translated_error_with_the_same_503(client: Any) -> None:
    for path in ("/translated", "/raw"):
        response = client.get(path)
        assert response.status_code == 503
        assert response.get_json() == {
            "error": {
                "code": "unavailable",
                "message": "Redis or the broker is unavailable; retry.",
                "details": None,
            }
        }


def test_a_backend_error_raised_on_purpose_keeps_its_message(client: Any) -> None:
    response = client.get("/said")
    assert response.status_code == 503
    assert response.get_json()["error"] == {
        "code": "unavailable",
        "message": "could not record the run: reset",
        "details": None,
    }
