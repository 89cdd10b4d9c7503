"""Liveness, readiness and metrics: open even when the API requires a token.

Being open, they answer states only (SPEC §14): no URL, credential or exception text.
What went wrong is in the web's log and, for MCP servers, in `GET /api/tools` (behind
the API's auth).
"""

from __future__ import annotations

import logging
import re

from flask import Blueprint, Response, jsonify
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from tasks.errors import BackendUnavailable

from .registry import registry
from .services import services

log = logging.getLogger(__name__)

bp = Blueprint("probes", __name__)

#: The words `/readyz` may say of an MCP server (or of the configuration file).
MCP_STATES = ("ok", "not listed yet", "unavailable", "invalid")


def mcp_states(status: dict[str, str]) -> dict[str, str]:
    """Each server's state in a word or two: `ok: 3 tools` keeps its count, while an
    error (`unavailable: <exception naming the URL>`) becomes its state alone. Server
    names come from the configuration file, not from the servers."""
    states = {}
    for name, text in status.items():
        if re.fullmatch(r"ok: [0-9]+ tools?", text):
            states[name] = text
        else:
            states[name] = next((s for s in MCP_STATES if text.startswith(s)), "unavailable")
    return states


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    checks: dict[str, object] = {}
    reason = None
    try:
        services().store.ping()
        checks["redis"] = "ok"
        workers = registry().alive
        checks["workers"] = workers
        if workers == 0:
            reason = "no live worker"
    except BackendUnavailable as exc:
        log.warning("readiness: Redis unavailable: %s", exc.cause or exc)
        checks["redis"] = "unavailable"
        reason = "redis unavailable"
    mcp = services().mcp
    if mcp.enabled:
        # Reported, not required: steps calling other tools work without them.
        checks["mcp"] = mcp_states(mcp.status())
    body = {"status": "ready" if reason is None else "not_ready", "checks": checks}
    if reason is not None:
        body["reason"] = reason
    return jsonify(body), 200 if reason is None else 503


@bp.get("/metrics")
def metrics() -> Response:
    data = generate_latest(services().metrics.registry)
    return Response(data, mimetype=CONTENT_TYPE_LATEST)
