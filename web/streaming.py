"""A run's events, live: Server-Sent Events and WebSocket (SPEC §7).

Both replay the stream from a cursor, then tail it, and end after `run_finished`.
Errors (unknown run, bad cursor, auth) are answered before a WebSocket upgrade, as
plain HTTP, so every client library can see them.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, g, request, stream_with_context
from flask_sock import Sock
from simple_websocket import ConnectionClosed, Server
from werkzeug.routing import WebsocketMismatch
from wsproto.connection import ConnectionState
from wsproto.events import TextMessage

from tasks.errors import BackendUnreachable, InvalidRequest
from tasks.events import Event
from tasks.stream_reads import ReplayPage

from .api import bp as api_bp
from .cursors import CursorExpired, cursor_arg, events_page, judge_cursor, trimmed_headers
from .errors import error_response
from .services import services
from .subscription import Gone

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
WS_INTERNAL_ERROR = 1011
WS_TRY_AGAIN = 1013
#: How long a closing WebSocket waits for the client's Close before ending anyway.
WS_CLOSE_WAIT_S = 2.0
#: The HTTP statuses 400 and 410 as close codes, for refusals that come after the
#: upgrade (a browser's WebSocket never sees the status of a refused handshake).
WS_BAD_CURSOR = 4400
WS_CURSOR_EXPIRED = 4410

#: How a WebSocket is closed when its subscription is dropped, by reason.
CLOSES = {
    "slow": (WS_TRY_AGAIN, "too far behind; reconnect with after"),
    "unavailable": (WS_TRY_AGAIN, "event store unavailable; reconnect with after"),
    "shutdown": (WS_GOING_AWAY, "server going away; reconnect with after"),
    "cursor": (WS_BAD_CURSOR, "cursor beyond the last event of the run"),
    "trimmed": (
        WS_CURSOR_EXPIRED,
        "events after the cursor were trimmed; reload the run and resume from its last_event_id",
    ),
}

NOT_AN_UPGRADE = "expected a WebSocket upgrade"

sock = Sock()
ws_bp = Blueprint("stream", __name__, url_prefix="/api")


def sse_frames(run_id: str, after: str, first: ReplayPage | None = None) -> Iterator[str]:
    svc = services()
    gauge = svc.metrics.subscribers.labels("sse")
    sent = svc.metrics.events_sent.labels("sse")
    gauge.inc()
    try:
        # A first byte lets proxies and clients know the stream is open.
        yield ": stream open\n\n"
        # Events are held only until they are written, here as in the hub (see
        # `Hub.follow`): not the first page for the life of the stream, nor a batch
        # while the next one is awaited.
        batches = svc.hub.follow(run_id, after, SSE_KEEPALIVE_S, first)
        first = None
        for batch in batches:
            if not batch:
                yield ": keepalive\n\n"
                continue
            count = len(batch)
            text = "".join([f"id: {e.id}\nevent: {e.type}\ndata: {e.encode()}\n\n" for e in batch])
            del batch
            yield text
            sent.inc(count)
    except (Gone, BackendUnreachable) as exc:
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
    # Checked on the hub's own connections, like the replay that follows (whose first
    # events are read with it): streaming never waits for the request pool.
    opening = services().hub.open(run_id, after)
    exists, retained = opening.exists, opening.retained
    reconnecting = bool(request.headers.get("Last-Event-ID"))
    ended = ("finished", "beyond") if reconnecting else ("finished",)
    if retained.finished and retained.place(after) in ended:
        # Nothing will ever follow: 204 is what tells an EventSource to stop (WHATWG),
        # where an empty stream would only have it reconnect again, whether it came
        # back with Last-Event-ID or was opened with `after` at the end.
        return Response(status=204)
    judge_cursor(run_id, after, exists, retained)
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return Response(
        stream_with_context(sse_frames(run_id, after, opening)),
        mimetype="text/event-stream",
        headers=headers | trimmed_headers(after, retained),
    )


@ws_bp.before_request
def ws_checks() -> None:
    # Runs before flask-sock upgrades the connection, so refusals are plain HTTP.
    if not is_upgrade():
        raise InvalidRequest(NOT_AN_UPGRADE)
    run_id = (request.view_args or {}).get("run_id", "")
    after = cursor_arg()
    opening = services().hub.open(run_id, after)
    exists, retained = opening.exists, opening.retained
    # Its first events, read with the check, for the stream to start with.
    g.stream_opening = opening
    # An expired cursor is told after the upgrade, as close code 4410, which a browser
    # can read (it never sees the status of a refused handshake).
    with contextlib.suppress(CursorExpired):
        judge_cursor(run_id, after, exists, retained)
    # permessage-deflate is declined: events are small, and a zlib context per
    # connection costs about 110 KB and CPU on every frame, at both ends. Without the
    # client's offer the handshake settles on plain frames.
    request.environ.pop("HTTP_SEC_WEBSOCKET_EXTENSIONS", None)


def is_upgrade() -> bool:
    """Whether the request is a WebSocket opening handshake (RFC 6455 §4.1): anything
    less makes the handshake fail inside flask-sock, which would be a 500."""
    headers = request.headers
    connection = {v.strip().lower() for v in headers.get("Connection", "").split(",")}
    return (
        "upgrade" in connection
        and headers.get("Upgrade", "").lower() == "websocket"
        and bool(headers.get("Sec-WebSocket-Key"))
        and headers.get("Sec-WebSocket-Version") == "13"
    )


@ws_bp.app_errorhandler(WebsocketMismatch)
def not_an_upgrade(exc: WebsocketMismatch) -> Response:
    """A plain HTTP request to a WebSocket route (routing tells it apart by its headers)."""
    return error_response(400, InvalidRequest.code, NOT_AN_UPGRADE)


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

    A server's frames are not masked, so with no extension negotiated (permessage-deflate
    is declined, see `ws_checks`) a text frame is a fixed header and the event's bytes:
    built here, that costs a tenth of going through wsproto, which matters at ten
    thousand deliveries a second. Anything else (an extension, a connection closing)
    goes through the connection's own wsproto state (`ws.ws`).
    """
    if not ws.connected:
        raise ConnectionClosed(ws.close_reason, ws.close_message)
    if _plain(ws):
        data = b"".join(text_frame(e.encode().encode()) for e in events)
    else:
        data = b"".join(ws.ws.send(TextMessage(data=e.encode())) for e in events)
    ws.sock.send(data)


def text_frame(payload: bytes) -> bytes:
    """An unmasked, unfragmented text frame (RFC 6455 §5.2)."""
    size = len(payload)
    if size < 126:
        return bytes((0x81, size)) + payload
    if size < 1 << 16:
        return b"\x81\x7e" + size.to_bytes(2, "big") + payload
    return b"\x81\x7f" + size.to_bytes(8, "big") + payload


def _plain(ws: Server) -> bool:
    """Whether the connection is open with no extension: frames need no wsproto."""
    proto = getattr(ws.ws.connection, "_proto", None)
    return (
        ws.ws.state is ConnectionState.OPEN
        and proto is not None
        and getattr(proto, "extensions", None) == []
    )


@sock.route("/runs/<run_id>/ws", bp=ws_bp)
def run_ws(ws: Server, run_id: str) -> None:
    ws.sock = WholeFrames(ws.sock)
    svc = services()
    after = cursor_arg()
    gauge = svc.metrics.subscribers.labels("ws")
    sent = svc.metrics.events_sent.labels("ws")
    gauge.inc()
    # What the close says unless the stream ends as it should or is dropped.
    code, text = WS_INTERNAL_ERROR, "internal error"
    try:
        # Handed over, not kept: the first events must not live as long as the stream.
        batches = svc.hub.follow(run_id, after, WS_WAIT_S, g.pop("stream_opening", None))
        for batch in batches:
            # Messages from the client mean nothing here; drop them so they cannot pile up
            # (looked for only when some arrived: asking costs a wait per delivery).
            if getattr(ws, "input_buffer", True):
                while ws.receive(timeout=0) is not None:
                    pass
            if not ws.connected:
                break
            if batch:
                send_frames(ws, batch)
                sent.inc(len(batch))
            del batch  # not held while the next one is awaited (see `sse_frames`)
        code, text = WS_NORMAL, "run finished"
    except ConnectionClosed:
        code, text = WS_NORMAL, ""  # the client closed first; its Close was answered
    except (Gone, BackendUnreachable) as exc:
        reason = _reason(exc)
        log.warning("WebSocket stream of run %s ended: %s", run_id, reason)
        svc.metrics.dropped.labels("ws", reason).inc()
        code, text = CLOSES.get(reason, CLOSES["unavailable"])
    finally:
        gauge.dec()
        close_cleanly(ws, code, text)


def close_cleanly(ws: Server, code: int, text: str) -> None:
    """The closing handshake of RFC 6455 §7.1: send Close, wait for the client's Close,
    then end the TCP connection from the server's side.

    Left to itself the connection ends otherwise: under Werkzeug (`flask run`), once
    the view returns, the server writes an HTTP response of its own onto the socket
    right behind the Close frame. A browser reads that as a broken frame and fails the
    connection (close 1006, wasClean false), dropping frames it had received but not
    yet handed to the page: the last events, `run_finished` among them. Here the
    socket is shut down once the handshake is over, so that late write fails as a
    dropped connection (which Werkzeug ignores) instead of reaching the client;
    gunicorn writes nothing after a WebSocket.
    """
    with contextlib.suppress(ConnectionClosed, OSError):
        ws.close(reason=code, message=text)
    # simple-websocket's reader ends when the client's Close (or the end of the
    # connection) arrives; a client that never answers is not waited for long.
    ws.thread.join(timeout=WS_CLOSE_WAIT_S)
    with contextlib.suppress(OSError):
        ws.sock.shutdown(socket.SHUT_RDWR)


def ws_options() -> dict[str, object]:
    return {"ping_interval": WS_PING_S, "max_message_size": 1 << 20}
