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

One connection at a time comes from `client.streams` (`SSEStream`, `WSStream`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlencode

import httpx

from tasks.statuses import EventType

from .errors import ApiError, EventGap, GaveUp
from .streams import (
    RETRYABLE_STATUSES,
    WS_NORMAL_CLOSE,
    WS_REFUSALS,
    Event,
    SSEStream,
    Transport,
    WSStream,
    decode_event,
    websocket_module,
    ws_url,
)

#: The shortest pause between reconnections, whatever a server's `retry:` asks.
MIN_PAUSE_S = 0.01


def stream_id_key(event_id: str) -> tuple[int, int] | None:
    """A Redis stream id (`<ms>-<seq>`) as a pair that sorts as the stream does."""
    # `isdecimal` is what `\d` matches: the same test as a regex, at a fraction of the
    # cost (a replay checks a hundred thousand ids a second).
    ms, _, seq = event_id.partition("-")
    return (int(ms), int(seq)) if ms.isdecimal() and seq.isdecimal() else None


# -- the resume bookkeeping ----------------------------------------------------------


@dataclass
class Cursor:
    """Where a follower stands in a run's stream.

    `last_id` is the last event delivered (or skipped as unreadable): a reconnection
    asks for what follows it. An event at or before it was delivered already and is
    dropped (`repeats` counts them); an event whose `seq` does not follow the last one
    delivered means events were lost, and raises `EventGap`. Followed from the start, a
    first event past seq 1 means the oldest were trimmed: `trimmed` says how many.
    """

    last_id: str | None = None
    last_seq: int | None = None
    delivered: int = 0
    repeats: int = 0
    finished: bool = False
    #: Followed from the start, the events the stream no longer holds before its first
    #: (trimmed by `STEPSTREAM_EVENT_MAXLEN`): the first delivered has this seq + 1.
    trimmed: int = 0
    #: `last_id` as a key, and the id it was made from: each event's id is parsed once.
    _last_key: tuple[str | None, tuple[int, int] | None] = field(
        default=(None, None), init=False, repr=False, compare=False
    )

    def accept(self, event_id: str, seq: object, event_type: str) -> bool:
        """Whether an event read from the stream is new, to be delivered."""
        number = seq if type(seq) is int else None
        key = stream_id_key(event_id)
        last = self._key_of_last()
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
        if number is not None and self.last_id is None and self.delivered == 0 and number > 1:
            self.trimmed = number - 1
        if event_id:
            self.last_id, self._last_key = event_id, (event_id, key)
        self.last_seq = number
        self.delivered += 1
        self.finished = self.finished or event_type == EventType.RUN_FINISHED
        return True

    def _key_of_last(self) -> tuple[int, int] | None:
        made_from, key = self._last_key
        if made_from != self.last_id:  # set from outside, or not yet parsed
            key = stream_id_key(self.last_id) if self.last_id else None
            self._last_key = (self.last_id, key)
        return key

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
        # Never below a floor: from a first pause of 0, doubling would never grow, and a
        # server answering 503 would be asked again in a tight loop.
        self.first = max(min(retry_ms / 1000, self.most), MIN_PAUSE_S)
        self._next = max(self._next, self.first)


# -- the follower --------------------------------------------------------------------


class Follower:
    """A run's events, each once and in order, from the cursor (`after`, default the
    start) to `run_finished`, across as many connections as it takes. Iterate it.

    `base_url` may list several servers (behind a load balancer): each reconnection
    goes to the next. With `run_token` (the run's `stream_token`) the stream is read
    with it rather than with `token`, which is only used once the run token is refused
    (it expired while the run went on). `on_retry` is told each reconnection, in words;
    `on_skip` each event that cannot be read (its id, why), which is then passed over;
    `on_trimmed` how many events a stream followed from its start no longer holds (its
    oldest were trimmed), before the first event delivered.
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
        on_trimmed: Callable[[int], None] | None = None,
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
        self.on_trimmed = on_trimmed
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
            errors += (websocket_module().WebSocketException,)
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
        # The event's own id, not the frame's: an SSE frame without an `id:` line carries
        # the previous frame's id over (WHATWG), which would read as a repeat.
        event_id = str(event.get("id") or frame_id)
        if not self.cursor.accept(event_id, event.get("seq"), event["type"]):
            return None
        if self.cursor.trimmed and self.cursor.delivered == 1 and self.on_trimmed is not None:
            self.on_trimmed(self.cursor.trimmed)
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
        websocket = websocket_module()
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
