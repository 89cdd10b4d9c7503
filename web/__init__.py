"""The web front end: `web:create_app` builds the Flask application."""

from __future__ import annotations

import logging
import time
from typing import Any

from flask import Flask, Response, g, request

from tasks.config import Settings
from tasks.eviction import check_eviction_policy
from tasks.mcp_tools.catalog import KnownTools, McpCatalog
from tasks.store import RunStore
from tasks.tools import default_registry
from worker.celery_app import create_celery_app

from . import api, browser_safety, errors, openapi, probes, streaming, ui
from .auth import RedactTokens, check_request
from .catalog import Catalog
from .hub import Hub
from .json_provider import StrictJSONProvider
from .metrics import Metrics, method_label, route_label, status_label
from .run_tokens import EXTENSION as RUN_TOKENS
from .run_tokens import RunTokens
from .services import Services, services

#: Routes whose time is not a request's latency but a stream's lifetime.
STREAMING = frozenset({"api.run_events", "stream.run_ws"})


#: Pooled Redis connections of one web process's requests (the hub has its own four).
WEB_REDIS_CONNECTIONS = 6
#: The name a web process's Redis connections carry in CLIENT LIST (the hub's too).
WEB_CLIENT_NAME = "stepstream-web"


def create_app(settings: Settings | None = None, **config: Any) -> Flask:
    """Build the app; settings come from the environment unless given."""
    settings = settings or Settings.from_env()
    app = Flask(__name__)
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        JSON_SORT_KEYS=False,
        SOCK_SERVER_OPTIONS=streaming.ws_options(),
    )
    app.json = StrictJSONProvider(app)  # every response strict JSON (SPEC §14)
    app.config.update(config)

    tools = default_registry()
    mcp = McpCatalog(settings.mcp_config, settings.mcp_refresh_s)
    # The web's Redis connections stay few whatever the load: requests share a capped
    # pool, and live events come through the hub's single connection.
    store = RunStore.from_settings(
        settings, max_connections=WEB_REDIS_CONNECTIONS, client_name=WEB_CLIENT_NAME
    )
    app.extensions["stepstream"] = Services(
        settings=settings,
        store=store,
        hub=Hub(
            settings.redis_url,
            queue_limit=settings.stream_queue,
            queue_bytes=settings.stream_queue_bytes,
            client_name=WEB_CLIENT_NAME,
        ),
        tools=tools,
        mcp=mcp,
        # Scenarios are checked again whenever the MCP servers' tools change.
        catalog=Catalog(settings.scenarios_dir, KnownTools(tools, mcp), lambda: mcp.version),
        celery=create_celery_app(settings),
        metrics=Metrics(),
    )
    run_tokens = RunTokens.from_settings(settings)
    app.extensions[RUN_TOKENS] = run_tokens
    for name in ("werkzeug", "gunicorn.access", "gunicorn.error"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactTokens) for f in logger.filters):
            logger.addFilter(RedactTokens())

    errors.register(app)
    browser_safety.register(app, settings)  # first of the checks: SPEC §14
    app.register_blueprint(api.bp)
    app.register_blueprint(streaming.ws_bp)
    streaming.sock.init_app(app)
    app.register_blueprint(probes.bp)
    app.register_blueprint(openapi.bp)
    app.register_blueprint(ui.bp)

    mcp.start()

    @app.before_request
    def _before() -> None:
        g.started = time.perf_counter()
        mcp.start()  # again in a forked process; otherwise a no-op
        token = settings.api_token
        if token and request.path.startswith("/api"):
            check_request(token, run_tokens)

    # Each labelled series is looked up once: `labels()` takes a lock and checks its
    # values on every call. The label values come from fixed sets (web/metrics.py), so
    # these stay small.
    counted: dict[tuple[str, str, str], Any] = {}
    timed: dict[str, Any] = {}

    @app.after_request
    def _after(response: Response) -> Response:
        route = route_label(request.url_rule.rule if request.url_rule else None)
        metrics = services().metrics
        key = (method_label(request.method), route, status_label(response.status_code))
        counter = counted.get(key)
        if counter is None:
            counter = counted[key] = metrics.requests.labels(*key)
        counter.inc()
        if request.endpoint not in STREAMING and "started" in g:
            histogram = timed.get(route)
            if histogram is None:
                histogram = timed[route] = metrics.latency.labels(route)
            histogram.observe(time.perf_counter() - g.started)
        return response

    check_eviction_policy(settings.redis_url, "web")
    for scenario_error in app.extensions["stepstream"].catalog.errors:
        app.logger.warning("scenario %s skipped: %s", scenario_error.path, scenario_error.reason)
    return app


__all__ = ["create_app"]
