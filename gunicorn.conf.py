"""gunicorn settings for the web app: `gunicorn -c gunicorn.conf.py 'web:create_app()'`.

A file beside the packages rather than a module inside `web`: importing `web` in the
master would load redis-py and ssl before the gevent workers patch them.

gevent workers hold thousands of WebSockets and SSE streams per process, each a
greenlet waiting on its subscription to the process's hub. On SIGTERM a worker first
tells every subscriber it is going away (WebSocket close 1001, SSE stream ended), so
clients resume elsewhere with `after` at once, and then stops as gunicorn does.

Its access log (`--access-logfile -`) never shows a token: the atoms a log format can
use (the request line, the query string, headers, the environment) are redacted before
they are formatted (SPEC §6, §14).
"""

from __future__ import annotations

import gc
import os
import signal
from typing import Any

import gevent
from gunicorn.glogging import Logger

bind = os.environ.get("STEPSTREAM_BIND", "127.0.0.1:8000")
worker_class = "gevent"
workers = int(os.environ.get("WEB_CONCURRENCY", "1"))
#: Concurrent connections per worker: every live subscriber holds one.
worker_connections = int(os.environ.get("STEPSTREAM_WORKER_CONNECTIONS", "10000"))
graceful_timeout = 10
# Streams are long-lived by design; only a silent client is dropped (SSE keepalives and
# WebSocket pings keep live ones busy).
timeout = 60
keepalive = 5


class RedactingLogger(Logger):
    """gunicorn's logger, with `access_token` (in any spelling) and the Authorization
    header taken out of the access log's atoms. The web app also filters the
    `gunicorn.access` and `gunicorn.error` loggers: this keeps the token out of the
    record itself, so not even a broken format's logging error can print it."""

    def atoms(self, resp: Any, req: Any, environ: Any, request_time: Any) -> dict[str, Any]:
        # Imported on first use, in a worker (the master never logs a request), after
        # gevent has patched it: importing `web` in the master would load redis-py first.
        from web.auth import redact_atoms

        return redact_atoms(super().atoms(resp, req, environ, request_time))


logger_class = RedactingLogger


def post_worker_init(worker: Any) -> None:
    # Thousands of long-lived greenlets make a large heap for the cyclic collector to
    # walk: keep what exists at start out of its way, and let it run less often.
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)
    stop = worker.handle_exit

    def handle_exit(sig: int, frame: Any) -> None:
        # Off the signal handler (which runs in gevent's loop, where nothing may block):
        # saying goodbye takes locks and wakes the subscribers' greenlets.
        gevent.spawn(_say_goodbye, worker)
        stop(sig, frame)

    signal.signal(signal.SIGTERM, handle_exit)


def _say_goodbye(worker: Any) -> None:
    extensions = getattr(worker.wsgi, "extensions", {})
    services = extensions.get("stepstream")
    if services is not None:
        services.hub.stop()
