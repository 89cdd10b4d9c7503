"""Following a run's events to the end, exactly once, over SSE or WebSocket (SPEC §7).

`Follower` is the project's one resuming follower: the command line, the tests and the
benchmarks use it. It remembers the last event it delivered and, when a stream is cut
short (a dropped connection, a 503, WebSocket close 1001 or 1013, an SSE response that
ends early), reconnects after it: `Last-Event-ID` over SSE, `?after=` over WebSocket.
Its `Cursor` drops an event sent twice and stops at a gap, so nothing is repeated and
nothing is skipped without a word. It stops at `run_finished`, or at once when the run
had finished at the cursor (SSE 204, WebSocket close 1000 with nothing sent); a cursor
whose events were trimmed (410, close 4410) raises `CursorExpired`, any other refusal
`ApiError`, and reconnecting for longer than `retry_for` raises `GaveUp`.

`SSEStream` and `WSStream` are one connection each, for callers that want the raw
answer (a status, a close code, control frames) instead of a resumed follow.

Over SSE only httpx is needed, as for the rest of the client; WebSocket needs the
`websocket-client` package, imported only when a WebSocket is opened.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType, TracebackType
from typing import Any, Literal, Self
from urllib.parse import urlencode

import httpx

from tasks.statuses import EventType
from tasks.strict_json import sanitized

from .errors import ApiError, EventGap, GaveUp
from .sse import SSEDecoder, SSEMessage

Event = dict[str, Any]
Transport = Literal["sse", "ws"]

#: Answers after which trying again makes sense: the server, or its Redis, is restarting.
RETRYABLE_STATUSES = frozenset({502, 503, 504})
WS_NORMAL_CLOSE = 1000
#: WebSocket close codes 4000 + an HTTP status: refusals told after the upgrade.
WS_REFUSALS = range(4000, 5000)

_STREAM_ID = re.compile(r"(\d+)-(\d+)")


def stream_id_key(event_id: str) -> tuple[int, int] | None:
    """A Redis stream id (`<ms>-<seq>`) as a pair that sorts as the stream does."""
    match = _STREAM_ID.fullmatch(event_id)
    return (int(match[1]), int(match[2])) if match else None


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


# -- the resume bookkeeping ----------------------------------------------------------


@dataclass
class Cursor:
    """Where a follower stands in a run's stream.

    `last_id` is the last event delivered (or skipped as unreadable): a reconnection
    asks for what follows it. An event at or before it was delivered already and is
    dropped (`repeats` counts them); an event whose `seq` does not follow the last one
    delivered means events were lost, and raises `EventGap`.
    """

    last_id: str | None = None
    last_seq: int | None = None
    delivered: int = 0
    repeats: int = 0
    finished: bool = False

    def accept(self, event_id: str, seq: object, event_type: str) -> bool:
        """Whether an event read from the stream is new, to be delivered."""
        number = seq if type(seq) is int else None
        key = stream_id_key(event_id)
        last = stream_id_key(self.last_id) if self.last_id else None
        if key is not None and last is not None:
            repeat = key <= last
        else:  # ids that do not compare: the seqs may
            repeat = number is not None and self.last_seq is not None and number <= self.last_seq
        if repeat:
            self.repeats += 1
            return False
        if number is not None and self.last_seq is not None and number != self.last_seq + 1:
            raise EventGap(
                f"event {event_id} has seq {number} right after seq {self.last_seq}: "
                f"{number - self.last_seq - 1} event(s) missing"
            )
        self.last_id = event_id or self.last_id
        self.last_seq = number
        self.delivered += 1
        self.finished = self.finished or event_type == EventType.RUN_FINISHED
        return True

    def skip(self, event_id: str, event_type: str = "") -> None:
        """An event that could not be read: passed (never asked for again), not
        delivered; the next one's seq cannot be checked against it."""
        self.last_id = event_id or self.last_id
        self.last_seq = None
        self.finished = self.finished or event_type == EventType.RUN_FINISHED


@dataclass
class Backoff:
    """Pauses between reconnections: `first`, doubling up to `most`, and `first` again
    once events flow. A server's SSE `retry:` raises `first` (never above `most`)."""

    first: float = 0.2
    most: float = 5.0
    _next: float = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._next = self.first

    def pause(self) -> float:
        pause, self._next = self._next, min(self._next * 2, self.most)
        return pause

    def reset(self) -> None:
        self._next = self.first

    def server_wish(self, retry_ms: int) -> None:
        self.first = min(retry_ms / 1000, self.most)
        self._next = max(self._next, self.first)


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


def _websocket() -> ModuleType:
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
        self._ws = _websocket()
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


# -- the follower --------------------------------------------------------------------


class Follower:
    """A run's events, each once and in order, from the cursor (`after`, default the
    start) to `run_finished`, across as many connections as it takes. Iterate it.

    `base_url` may list several servers (behind a load balancer): each reconnection
    goes to the next. With `run_token` (the run's `stream_token`) the stream is read
    with it rather than with `token`, which is only used once the run token is refused
    (it expired while the run went on). `on_retry` is told each reconnection, in words;
    `on_skip` each event that cannot be read (its id, why), which is then passed over.
    """

    def __init__(
        self,
        base_url: str | Sequence[str],
        run_id: str,
        transport: Transport = "sse",
        *,
        after: str | None = None,
        token: str | None = None,
        run_token: str | None = None,
        headers: Mapping[str, str] | None = None,
        retry_for: float | None = 120.0,
        backoff: Backoff | None = None,
        read_timeout: float = 60.0,
        connect_timeout: float = 30.0,
        on_retry: Callable[[str], None] | None = None,
        on_skip: Callable[[str, str], None] | None = None,
        http: httpx.Client | None = None,
    ) -> None:
        if transport not in ("sse", "ws"):
            raise ValueError(f"transport must be 'sse' or 'ws', not {transport!r}")
        self.base_urls = [base_url] if isinstance(base_url, str) else list(base_url)
        self.base_url = self.base_urls[0].rstrip("/")
        self.run_id = run_id
        self.transport = transport
        self.cursor = Cursor(last_id=after or None)
        self.headers = dict(headers or {})
        self.retry_for = retry_for
        self.backoff = backoff or Backoff()
        self.read_timeout = read_timeout
        self.connect_timeout = connect_timeout
        self.on_retry = on_retry
        self.on_skip = on_skip
        #: Connections tried, and those that ended before the run did.
        self.connections = 0
        self.cut_short = 0
        #: The `run_finished` event, once delivered.
        self.final: Event | None = None
        self._start = self.cursor.last_id
        self._token = token
        self._run_token = run_token
        self._http = http
        self._at_end = False
        self._progress_at = 0.0

    @property
    def finished(self) -> bool:
        """Whether `run_finished` came (it is `final`, unless it could not be read)."""
        return self.cursor.finished

    @property
    def ended(self) -> bool:
        """Whether the follow is over: `run_finished` delivered, or the run had
        finished at the cursor (nothing follows it)."""
        return self.cursor.finished or self._at_end

    def __iter__(self) -> Iterator[Event]:
        return self._follow()

    def _follow(self) -> Iterator[Event]:
        http = self._http or httpx.Client()
        errors: tuple[type[BaseException], ...] = (httpx.TransportError, OSError)
        if self.transport == "ws":
            errors += (_websocket().WebSocketException,)
        self._progress_at = time.monotonic()
        try:
            while not self.ended:
                self.connections += 1
                try:
                    if self.transport == "ws":
                        problem = yield from self._ws_once()
                    else:
                        problem = yield from self._sse_once(http)
                except errors as exc:
                    problem = f"connection lost ({exc or type(exc).__name__})"
                if problem is not None:
                    self._pause_before_retry(problem)
        finally:
            if self._http is None:
                http.close()

    def _pause_before_retry(self, problem: str) -> None:
        self.cut_short += 1
        self.base_url = self.base_urls[self.cut_short % len(self.base_urls)].rstrip("/")
        pause = self.backoff.pause()
        waited = time.monotonic() + pause - self._progress_at
        if self.retry_for is not None and waited > self.retry_for:
            raise GaveUp(f"run {self.run_id}: no stream for {self.retry_for:g} s, last: {problem}")
        if self.on_retry is not None:
            where = f"after {self.cursor.last_id}" if self.cursor.last_id else "from the start"
            self.on_retry(f"{problem}; reconnecting {where} in {pause:g} s")
        time.sleep(pause)  # back off before reconnecting

    def _auth(self) -> dict[str, str]:
        token = self._run_token or self._token
        return {"Authorization": f"Bearer {token}"} if token else {}

    def _refused(self, status: int, body: bytes | str) -> str | None:
        """What a refused connection means: None to go on at once, else the problem
        to retry after; raises when trying again cannot help."""
        if status == 204:  # SSE: the run finished at the cursor
            self._at_end = True
            return None
        if status == 401 and self._run_token:
            self._run_token = None  # expired: the API token (if any) from now on
            return None
        error = ApiError.from_body(status, body)
        if status in RETRYABLE_STATUSES:
            return str(error)
        raise error

    def _take(self, data: str | bytes, frame_id: str = "", frame_type: str = "") -> Event | None:
        """The event a frame carries if it is new; None for a repeat or an unreadable one."""
        event = decode_event(data)
        if isinstance(event, str):
            self.cursor.skip(frame_id, frame_type)
            if self.on_skip is not None:
                self.on_skip(frame_id or "?", event)
            return None
        event_id = frame_id or str(event.get("id", ""))
        if not self.cursor.accept(event_id, event.get("seq"), event["type"]):
            return None
        self._progress_at = time.monotonic()
        self.backoff.reset()
        if self.cursor.finished:
            self.final = event
        return event

    def _sse_once(self, http: httpx.Client) -> Generator[Event, None, str | None]:
        headers = {**self.headers, **self._auth()}
        params = {}
        last = self.cursor.last_id
        if last is not None and last == self._start:
            params["after"] = last  # the caller's cursor, judged as given (400 if beyond)
        elif last is not None:
            headers["Last-Event-ID"] = last
        timeout = httpx.Timeout(self.connect_timeout, read=self.read_timeout)
        url = f"{self.base_url}/api/runs/{self.run_id}/events"
        with SSEStream(http, url, params=params, headers=headers, timeout=timeout) as stream:
            if stream.response.status_code != 200:
                return self._refused(stream.response.status_code, stream.response.read())
            self._progress_at = time.monotonic()
            for message in stream.messages():
                event = self._take(message.data, message.id, message.event)
                if event is not None:
                    yield event
                if self.ended:
                    return None
            if stream.decoder.retry_ms is not None:
                self.backoff.server_wish(stream.decoder.retry_ms)
        return "the stream ended early"

    def _ws_once(self) -> Generator[Event, None, str | None]:
        websocket = _websocket()
        last = self.cursor.last_id
        query = f"?{urlencode({'after': last})}" if last else ""
        url = f"{ws_url(self.base_url)}/api/runs/{self.run_id}/ws{query}"
        try:
            stream = WSStream(
                url, headers={**self.headers, **self._auth()}, timeout=self.read_timeout
            )
        except websocket.WebSocketBadStatusException as refused:
            return self._refused(refused.status_code, refused.resp_body or b"")
        with stream:
            self._progress_at = time.monotonic()
            frames = 0
            for data in stream.frames():
                frames += 1
                event = self._take(data)
                if event is not None:
                    yield event
                if self.ended:
                    return None
        code, reason = stream.close_code, stream.close_reason
        if code == WS_NORMAL_CLOSE and frames == 0:
            self._at_end = True  # the run finished at the cursor: nothing follows it
            return None
        if code is not None and code in WS_REFUSALS:
            raise ApiError.from_close(code, reason)
        if code is None:
            return "the connection was cut"
        return f"closed with {code}" + (f" ({reason})" if reason else "")
