"""Every failure becomes `{"error": {"code", "message", "details"}}` with its status."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from tasks.errors import (
    BackendUnavailable,
    Conflict,
    InvalidInput,
    InvalidRequest,
    NotFound,
    StepstreamError,
)
from tasks.redis_client import OUR_OWN, UNAVAILABLE, as_backend_error

log = logging.getLogger(__name__)

STATUS = {
    InvalidRequest: 400,
    NotFound: 404,
    Conflict: 409,
    InvalidInput: 422,
    BackendUnavailable: 503,
}

#: What a 503 says when Redis or the broker failed a call: never the library's text.
UNAVAILABLE_MESSAGE = "Redis or the broker is unavailable; retry."


class Unauthorized(StepstreamError):
    code = "unauthorized"


STATUS[Unauthorized] = 401


def error_response(status: int, code: str, message: str, details: Any = None) -> Response:
    response = jsonify({"error": {"code": code, "message": message, "details": details}})
    response.status_code = status
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="stepstream"'
    return response


def status_of(exc: StepstreamError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def register(app: Flask) -> None:
    @app.errorhandler(StepstreamError)
    def _stepstream(exc: StepstreamError) -> Response:
        return error_response(status_of(exc), exc.code, exc.message, exc.details)

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        code = (exc.name or "error").lower().replace(" ", "_")
        if exc.code == 413:
            code = "body_too_large"
        response = error_response(exc.code or 500, code, exc.description or exc.name)
        if exc.code == 405 and exc.response is None:
            valid = getattr(exc, "valid_methods", None)
            if valid:
                response.headers["Allow"] = ", ".join(valid)
        return response

    @app.errorhandler(BackendUnavailable)
    def _unavailable(exc: BackendUnavailable) -> Response:
        if exc.cause is None:  # said on purpose, with its own message
            return error_response(503, exc.code, exc.message, exc.details)
        log.warning("backend unavailable: %s", exc.cause)
        return error_response(503, BackendUnavailable.code, UNAVAILABLE_MESSAGE)

    @app.errorhandler(Exception)
    def _internal(exc: Exception) -> Response:
        log.exception("unhandled error")
        return error_response(500, "internal", "internal error")

    def _untranslated(exc: Exception) -> Response:
        if isinstance(exc, OUR_OWN):
            return _internal(exc)
        return _unavailable(as_backend_error(exc))

    # A client library's error that no call translated (every backend call should):
    # answered the same way, unless it is a bug of ours. Not a bare OSError: outside
    # those calls it is no outage.
    for low_level in UNAVAILABLE:
        if low_level is not OSError:
            app.register_error_handler(low_level, _untranslated)
