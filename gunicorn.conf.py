"""gunicorn settings for the web app: `gunicorn -c gunicorn.conf.py 'web:create_app()'`.

A file beside the packages rather than a module inside `web`: importing `web` in the
master would load redis-py and ssl before the gevent workers patch them.

gevent workers hold thousands of WebSockets and SSE streams per process, each a
greenlet waiting on its subscription to the process's hub. On SIGTERM a worker first
tells every subscriber it is going away (WebSocket close 1001, SSE stream ended), so
clients resume elsewhere with `after` at once, and then stops as gunicorn does.
"""

from __future__ import annotations

import gc
import os
import signal
from typing import Any

import gevent

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
