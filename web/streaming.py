"""A run's events, live: Server-Sent Events and WebSocket (SPEC §7).

Both replay the stream from a cursor, then tail it, and end after `run_finished`.
Errors (unknown run, bad cursor, auth) are answered before a WebSocket upgrade, as
plain HTTP, so every client library can see them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import redis
from flask import Blueprint, Response, request, stream_with_context
from flask_sock import Sock
from simple_websocket import ConnectionClosed, Server
from wsproto.events import TextMessage

from tasks.events import Event

from .api import bp as api_bp
from .api import cursor_arg, events_page, require_run
from .hub import Gone
from .services import services

log = logging.getLogger(__name__)

#: A `: keepalive` comment this often while nothing else is sent (SPEC: at most 15 s).
SSE_KEEPALIVE_S = 10.0
#: WebSocket pings this often (SPEC: at most 25 s).
WS_PING_S = 20.0
#: How long one blocking read waits; a closed WebSocket is noticed within it.
WS_WAIT_S = 5.0
#: Close codes (RFC 6455 and SPEC §7).
WS_NORMAL = 1000
WS_GOING_AWAY = 1001
WS_TRY_AGAIN = 1013

#: How a WebSocket is closed when its subscription is dropped, by reason.
CLOSES = {
    "slow": (WS_TRY_AGAIN, "too far behind; reconnect with after"),
    "unavailable": (WS_TRY_AGAIN, "event store unavailable; reconnect with after"),
    "shutdown": (WS_GOING_AWAY, "server going away; reconnect with after"),
}

sock = Sock()
ws_bp = Blueprint("stream", __name__, url_prefix="/api")


def sse_frames(run_id: str, after: str) -> Iterator[str]:
    svc = services()
    gauge = svc.metrics.subscribers.labels("sse")
    sent = svc.metrics.events_sent.labels("sse")
    gauge.inc()
    try:
        # A first byte lets proxies and clients know the stream is open.
        yield ": stream open\n\n"
        for batch in svc.hub.follow(run_id, after, SSE_KEEPALIVE_S):
            if not batch:
                yield ": keepalive\n\n"
                continue
            yield "".join(f"id: {e.id}\nevent: {e.type}\ndata: {e.encode()}\n\n" for e in batch)
            sent.inc(len(batch))
    except (Gone, redis.ConnectionError, redis.TimeoutError) as exc:
        # Ending the response lets the client reconnect with Last-Event-ID.
        log.warning("SSE stream of run %s ended: %s", run_id, exc)
        svc.metrics.dropped.labels("sse", _reason(exc)).inc()
    finally:
        gauge.dec()


def _reason(exc: Exception) -> str:
    return exc.reason if isinstance(exc, Gone) else "unavailable"


@api_bp.get("/runs/<run_id>/events")
def run_events(run_id: str) -> Response:
    wanted = request.accept_mimetypes.best_match(
        ["text/event-stream", "application/json"], default="text/event-stream"
    )
    if wanted == "application/json":
        return events_page(run_id)
    after = cursor_arg()
    require_run(run_id)
    return Response(
        stream_with_context(sse_frames(run_id, after)),
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@ws_bp.before_request
def ws_checks() -> None:
    # Runs before flask-sock upgrades the connection, so refusals are plain HTTP.
    run_id = (request.view_args or {}).get("run_id", "")
    cursor_arg()
    require_run(run_id)
    # permessage-deflate is declined: events are small, and a zlib context per
    # connection costs about 110 KB and CPU on every frame, at both ends. Without the
    # client's offer the handshake settles on plain frames.
    request.environ.pop("HTTP_SEC_WEBSOCKET_EXTENSIONS", None)


class WholeFrames:
    """The connection's socket, for simple-websocket to write frames to whole.

    It writes each frame with `socket.send()`, which may write only part of it when the
    send buffer is full (under gevent, as soon as a client reads slower than a replay
    writes): the rest would be lost and the stream corrupted. Its ping thread may also
    write at the same moment. Here every frame goes out whole, one at a time.
    """

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._lock = threading.Lock()

    def send(self, data: bytes) -> int:
        with self._lock:
            self._sock.sendall(data)
        return len(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def send_frames(ws: Server, events: list[Event]) -> None:
    """One text frame per event (SPEC §7), written together in one send.

    The frames are built by the connection's own wsproto state (`ws.ws`), so a
    negotiated permessage-deflate applies to them as to any frame simple-websocket sends.
    """
    if not ws.connected:
        raise ConnectionClosed(ws.close_reason, ws.close_message)
    ws.sock.send(b"".join(ws.ws.send(TextMessage(data=e.encode())) for e in events))


@sock.route("/runs/<run_id>/ws", bp=ws_bp)
def run_ws(ws: Server, run_id: str) -> None:
    ws.sock = WholeFrames(ws.sock)
    svc = services()
    after = cursor_arg()
    gauge = svc.metrics.subscribers.labels("ws")
    sent = svc.metrics.events_sent.labels("ws")
    gauge.inc()
    try:
        for batch in svc.hub.follow(run_id, after, WS_WAIT_S):
            # Messages from the client mean nothing here; drop them so they cannot pile up.
            while ws.receive(timeout=0) is not None:
                pass
            if not ws.connected:
                return
            if batch:
                send_frames(ws, batch)
                sent.inc(len(batch))
        ws.close(reason=WS_NORMAL, message="run finished")
    except ConnectionClosed:
        pass
    except (Gone, redis.ConnectionError, redis.TimeoutError) as exc:
        reason = _reason(exc)
        log.warning("WebSocket stream of run %s ended: %s", run_id, reason)
        svc.metrics.dropped.labels("ws", reason).inc()
        code, text = CLOSES.get(reason, CLOSES["unavailable"])
        ws.close(reason=code, message=text)
    finally:
        gauge.dec()


def ws_options() -> dict[str, object]:
    return {"ping_interval": WS_PING_S, "max_message_size": 1 << 20}
