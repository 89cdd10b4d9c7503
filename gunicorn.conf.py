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
from gunicorn.http import wsgi

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


class _Captured:
    """Stands in for the socket while gunicorn writes a response's headers."""

    def __init__(self) -> None:
        self.data = b""

    def sendall(self, data: bytes) -> None:
        self.data += data


#: gunicorn's own response class. gunicorn runs this file again when it reloads (SIGHUP):
#: the class below must extend gunicorn's, never the one the previous run installed.
_GunicornResponse: Any = getattr(wsgi.Response, "gunicorn_response", wsgi.Response)


class OneSendResponse(_GunicornResponse):  # type: ignore[misc]
    """gunicorn's response, with its headers sent together with the first body bytes
    rather than in a send of their own: a JSON answer (a POST's 202, a snapshot) is one
    system call instead of two, a tenth of what a POST costs the web. Headers are held
    only until the first body bytes, a file sent whole, or the end of the response."""

    gunicorn_response = _GunicornResponse
    _held = b""

    def send_headers(self) -> None:
        if self.headers_sent:
            return
        sock, self.sock = self.sock, _Captured()
        try:
            super().send_headers()
        finally:
            self._held, self.sock = self.sock.data, sock

    def _send_held(self) -> None:
        held, self._held = self._held, b""
        if held:
            self.sock.sendall(held)

    def write(self, arg: bytes) -> None:
        super().write(arg)
        if not arg:
            self._send_held()  # an empty write sends the headers, as gunicorn's own does

    def _emit_body(self, data: bytes) -> None:
        if self._held and not self.chunked:
            held, self._held = self._held, b""
            self.sock.sendall(held + data)
            return
        self._send_held()
        super()._emit_body(data)

    def sendfile(self, respiter: Any) -> bool:
        # gunicorn writes a file's bytes to the socket itself, after the headers.
        self.send_headers()
        self._send_held()
        return bool(super().sendfile(respiter))

    def close(self) -> None:
        self.send_headers()  # a response without body bytes (a HEAD, a 204) still has them
        self._send_held()
        super().close()


# `wsgi.create`, which gunicorn's workers call for each request, makes its response by
# this module-level name.
wsgi.Response = OneSendResponse  # type: ignore[misc]


def post_worker_init(worker: Any) -> None:
    # Thousands of long-lived greenlets make a large heap for the cyclic collector to
    # walk: keep what exists at start out of its way, and walk the older generations
    # rarely. The youngest is walked often, in short pauses: every pause holds up
    # every live delivery, and a storm of reconnections (each connection leaves a
    # couple of hundred objects alive) made pauses of 50-80 ms with 100,000 objects
    # to walk, 5-10 ms with 10,000.
    gc.freeze()
    gc.set_threshold(10_000, 50, 100)
    # One connection accepted per turn of the event loop (gevent's default is 100):
    # a thousand clients reconnecting at once would otherwise have hundreds of
    # requests run back to back ahead of the live deliveries, each greenlet waiting
    # its turn behind all of them. (Set before the worker makes its server.)
    from gevent.server import StreamServer

    StreamServer.max_accept = 1
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
