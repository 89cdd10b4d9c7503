"""Every failure becomes `{"error": {"code", "message", "details"}}` with its status."""

from __future__ import annotations

import logging
from typing import Any

import redis
from flask import Flask, Response, jsonify
from kombu.exceptions import OperationalError
from werkzeug.exceptions import HTTPException

from tasks.errors import (
    Conflict,
    InvalidInput,
    InvalidRequest,
    NotFound,
    StepstreamError,
    Unavailable,
)

log = logging.getLogger(__name__)

STATUS = {
    InvalidRequest: 400,
    NotFound: 404,
    Conflict: 409,
    InvalidInput: 422,
    Unavailable: 503,
}


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

    @app.errorhandler(redis.ConnectionError)
    @app.errorhandler(redis.TimeoutError)
    # Out of memory, read-only replica, a script killed: Redis cannot serve now.
    @app.errorhandler(redis.ResponseError)
    @app.errorhandler(OperationalError)
    def _unavailable(exc: Exception) -> Response:
        log.warning("backend unavailable: %s", exc)
        return error_response(503, "unavailable", "Redis or the broker is unavailable; retry.")

    @app.errorhandler(Exception)
    def _internal(exc: Exception) -> Response:
        log.exception("unhandled error")
        return error_response(500, "internal", "internal error")
