"""Liveness, readiness and metrics: open even when the API requires a token."""

from __future__ import annotations

import redis
from flask import Blueprint, Response, jsonify
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .registry import registry
from .services import services

bp = Blueprint("probes", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    checks: dict[str, object] = {}
    reason = None
    try:
        services().store.redis.ping()
        checks["redis"] = "ok"
        workers = registry().alive
        checks["workers"] = workers
        if workers == 0:
            reason = "no live worker"
    except redis.RedisError as exc:
        checks["redis"] = f"unavailable: {exc}"
        reason = "redis unavailable"
    mcp = services().mcp
    if mcp.enabled:
        # Reported, not required: steps calling other tools work without them.
        checks["mcp"] = mcp.status()
    body = {"status": "ready" if reason is None else "not_ready", "checks": checks}
    if reason is not None:
        body["reason"] = reason
    return jsonify(body), 200 if reason is None else 503


@bp.get("/metrics")
def metrics() -> Response:
    data = generate_latest(services().metrics.registry)
    return Response(data, mimetype=CONTENT_TYPE_LATEST)
