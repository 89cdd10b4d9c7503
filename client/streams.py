"""One connection to a run's event stream, SSE or WebSocket, and how its frames read.

`SSEStream` and `WSStream` are for callers that want the raw answer (a status, a close
code, control frames); `client.follow.Follower` resumes across them. Over SSE only
httpx is needed, as for the rest of the client; WebSocket needs the `websocket-client`
package, imported only when a WebSocket is opened.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from types import ModuleType, TracebackType
from typing import Any, Literal, Self

import httpx

from tasks.strict_json import sanitized

from .sse import SSEDecoder, SSEMessage

Event = dict[str, Any]
Transport = Literal["sse", "ws"]

#: Answers after which trying again makes sense: the server, or its Redis, is restarting.
RETRYABLE_STATUSES = frozenset({502, 503, 504})
WS_NORMAL_CLOSE = 1000
#: WebSocket close codes 4000 + an HTTP status: refusals told after the upgrade.
WS_REFUSALS = range(4000, 5000)


def decode_event(data: str | bytes) -> Event | str:
    """The event a frame carries, or why it cannot be read.

    Values strict JSON cannot carry (NaN, a lone surrogate, which no terminal can print)
    are replaced as the API replaces them, so that a sloppy event is still delivered.
    """
    try:
        event = sanitized(json.loads(data))
    except (ValueError, RecursionError) as exc:
        return f"not JSON ({exc})"
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        return "not an event object"
    return event


def ws_url(base_url: str) -> str:
    """`http(s)://host` as `ws(s)://host`."""
    return "ws" + base_url.removeprefix("http") if base_url.startswith("http") else base_url


# -- one connection ------------------------------------------------------------------


class SSEStream:
    """One GET of an SSE stream: `response` (status, headers), then `messages()`."""

    def __init__(
        self,
        http: httpx.Client,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: httpx.Timeout | float = 30.0,
        on_comment: Callable[[str], None] | None = None,
    ) -> None:
        request = http.build_request(
            "GET",
            url,
            # Only when given: httpx would replace a query the URL has with an empty one.
            params=dict(params) if params else None,
            headers={"Accept": "text/event-stream", **(headers or {})},
            timeout=timeout,
        )
        self.response = http.send(request, stream=True)
        self.decoder = SSEDecoder(on_comment)

    def messages(self) -> Iterator[SSEMessage]:
        return self.decoder.messages(self.response.iter_bytes())

    def close(self) -> None:
        self.response.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def websocket_module() -> ModuleType:
    try:
        import websocket  # websocket-client
    except ImportError:  # pragma: no cover - the test extra installs it
        raise ImportError(
            "following over WebSocket needs websocket-client (pip install websocket-client); "
            "SSE needs nothing more"
        ) from None
    return websocket


class WSStream:
    """One WebSocket connection: its text frames (`frames()`), then how it was closed:
    `close_code` and `close_reason`, None and "" when the connection broke or this side
    hung up first. A refused handshake raises websocket-client's
    `WebSocketBadStatusException` (status, headers and body of the refusal). `conn` is
    the websocket-client connection, for tests that read control frames themselves."""

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = 60.0,
        **options: Any,
    ) -> None:
        self._ws = websocket_module()
        # websocket-client checks UTF-8 in pure Python, byte by byte: slower than the
        # server for big events. JSON decoding rejects what is not valid text anyway.
        self.conn = self._ws.create_connection(
            url,
            timeout=timeout,
            header=[f"{k}: {v}" for k, v in (headers or {}).items()],
            skip_utf8_validation=True,
            **options,
        )
        self.close_code: int | None = None
        self.close_reason = ""

    def frames(self) -> Iterator[bytes]:
        """Each text frame's data until the server's Close (pings are answered)."""
        while True:
            opcode, data = self.conn.recv_data(control_frame=False)
            if opcode == self._ws.ABNF.OPCODE_CLOSE:
                if len(data) >= 2:
                    self.close_code = int.from_bytes(data[:2], "big")
                    self.close_reason = data[2:].decode("utf-8", "replace")
                return
            yield data

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
