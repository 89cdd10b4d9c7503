"""The client library's follower on its own: the resume bookkeeping (`Cursor`), the
pauses (`Backoff`), the errors, and the follower against scripted SSE servers that
cut streams short, repeat events, skip one, refuse, or ask for another token.

The follower against the real web, over both transports: tests/integration/test_follower.py.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import LiveServer, serve
from werkzeug.wrappers import Request, Response

from client.errors import ApiError, CursorExpired, EventGap, GaveUp
from client.follow import Backoff, Cursor, Follower, stream_id_key
from client.sse import SSEDecoder
from client.streams import decode_event
from devtools.redis_server import free_port

# -- the resume bookkeeping ----------------------------------------------------------


def test_a_cursor_takes_events_in_order_to_run_finished() -> None:
    cursor = Cursor()
    assert cursor.accept("5-0", 1, "run_queued")
    assert cursor.accept("5-1", 2, "run_started")
    assert (cursor.last_id, cursor.last_seq, cursor.finished) == ("5-1", 2, False)
    assert cursor.accept("6-0", 3, "run_finished")
    assert (cursor.delivered, cursor.repeats, cursor.finished) == (3, 0, True)


def test_a_cursor_drops_what_it_delivered_already() -> None:
    cursor = Cursor()
    for seq, event_id in enumerate(("9-0", "9-1", "10-0"), 1):
        assert cursor.accept(event_id, seq, "step_log")
    # A server that replays from an earlier point: each earlier event is dropped.
    assert not cursor.accept("9-1", 2, "step_log")
    assert not cursor.accept("10-0", 3, "step_log")
    assert cursor.accept("10-1", 4, "step_log")
    assert (cursor.delivered, cursor.repeats, cursor.last_id) == (4, 2, "10-1")


def test_a_cursor_compares_stream_ids_as_numbers() -> None:
    assert stream_id_key("10-0") > stream_id_key("9-99") > stream_id_key("9-5")  # type: ignore[operator]
    assert stream_id_key("0") is None and stream_id_key("1-2-3") is None
    cursor = Cursor(last_id="9-99")
    assert cursor.accept("10-0", 7, "step_log")  # "10-0" < "9-99" as text


def test_a_cursor_starting_after_an_id_drops_what_is_not_after_it() -> None:
    cursor = Cursor(last_id="7-0")
    assert not cursor.accept("6-3", 4, "step_log")
    assert not cursor.accept("7-0", 5, "step_log")
    assert cursor.accept("7-1", 6, "step_log")  # the first seq seen is not checked


def test_a_gap_in_seq_is_an_error_never_a_silent_loss() -> None:
    cursor = Cursor()
    cursor.accept("1-1", 1, "run_queued")
    cursor.accept("1-2", 2, "run_started")
    with pytest.raises(EventGap, match=r"seq 5 right after seq 2: 2 event\(s\) missing"):
        cursor.accept("1-5", 5, "step_log")
    assert cursor.last_id == "1-2"  # not moved past what was lost


def test_an_unreadable_event_is_passed_and_the_next_seq_not_checked() -> None:
    cursor = Cursor()
    cursor.accept("1-1", 1, "run_queued")
    cursor.skip("1-2")
    assert (cursor.last_id, cursor.last_seq, cursor.delivered) == ("1-2", None, 1)
    assert cursor.accept("1-3", 3, "step_log")
    assert not cursor.accept("1-2", 2, "step_log")  # never asked for again
    cursor.skip("", "run_finished")  # an unreadable run_finished still ends the run
    assert cursor.finished and cursor.last_id == "1-3"


def test_ids_that_do_not_compare_fall_back_on_seq() -> None:
    cursor = Cursor()
    assert cursor.accept("a", 1, "run_queued")
    assert not cursor.accept("b", 1, "run_queued")
    assert cursor.accept("c", 2, "run_started")
    assert cursor.accept("d", "x", "step_log")  # no seq: nothing to check


def test_the_backoff_doubles_to_its_cap_and_starts_again_once_events_flow() -> None:
    backoff = Backoff(first=0.2, most=1.0)
    assert [backoff.pause() for _ in range(5)] == [0.2, 0.4, 0.8, 1.0, 1.0]
    backoff.reset()
    assert backoff.pause() == 0.2
    backoff.server_wish(600)  # SSE `retry: 600`
    assert [backoff.pause(), backoff.pause()] == [0.6, 1.0]
    backoff.reset()
    backoff.server_wish(60_000)  # never above the cap
    assert backoff.pause() == 1.0


# -- errors and events -----------------------------------------------------------------


def test_error_answers_become_api_errors() -> None:
    body = {"error": {"code": "not_found", "message": "unknown run 'x'", "details": None}}
    error = ApiError.from_body(404, json.dumps(body).encode())
    assert (error.status, error.code, str(error)) == (404, "not_found", "404: unknown run 'x'")
    details = {"error": {"code": "invalid_input", "message": "bad", "details": [{"path": "$"}]}}
    assert str(ApiError.from_body(422, json.dumps(details))).startswith(
        '422: bad\n[\n  {\n    "path"'
    )
    proxy = ApiError.from_body(502, b"<html>Bad Gateway</html>")
    assert (proxy.code, proxy.message) == ("", "<html>Bad Gateway</html>")
    expired = ApiError.from_body(410, json.dumps({"error": {**body["error"], "code": "x"}}))
    assert isinstance(expired, CursorExpired)


def test_close_codes_4xxx_are_refusals() -> None:
    expired = ApiError.from_close(4410, "events after the cursor were trimmed")
    assert isinstance(expired, CursorExpired)
    assert (expired.status, expired.code) == (410, "cursor_expired")
    bad = ApiError.from_close(4400, "")
    assert type(bad) is ApiError and str(bad) == "400: WebSocket closed with 4400"


def test_events_are_decoded_as_the_api_would_serve_them() -> None:
    assert decode_event(b'{"type": "step_progress", "progress": NaN}') == {
        "type": "step_progress",
        "progress": None,
    }
    assert decode_event("{broken").startswith("not JSON")  # type: ignore[union-attr]
    assert decode_event("[1]") == decode_event('{"type": 1}') == "not an event object"


def test_the_push_decoder_reads_as_the_pull_decoder() -> None:
    stream = b": open\r\n\r\nid: 1-1\r\nevent: a\r\ndata: x\r\ndata: y\r\r: keep\n\ndata: z\r"
    pulled = list(SSEDecoder().messages([stream[i : i + 3] for i in range(0, len(stream), 3)]))
    comments: list[str] = []
    pusher = SSEDecoder(on_comment=comments.append)
    pushed = [m for i in range(0, len(stream), 3) for m in pusher.feed_bytes(stream[i : i + 3])]
    pushed += pusher.feed_bytes(b"")  # the end: the CR ends the last line
    assert pushed == pulled
    assert [(m.id, m.event, m.data) for m in pushed] == [("1-1", "a", "x\ny")]
    assert comments == ["open", "keep"]


# -- the follower against scripted servers ---------------------------------------------


def event(seq: int, kind: str = "step_log", **fields: Any) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "type": kind,
        "run_id": "r",
        "seq": seq,
        "id": f"1-{seq}",
        **fields,
    }


def frame(e: dict[str, Any], *, with_id: bool = True) -> str:
    head = f"id: {e['id']}\n" if with_id else ""
    return f"{head}event: {e['type']}\ndata: {json.dumps(e)}\n\n"


def sse(
    *events: dict[str, Any],
    retry_ms: int | None = None,
    headers: dict[str, str] | None = None,
    without_id: frozenset[int] = frozenset(),
) -> Callable[[Request], Response]:
    """An answer: these events as an SSE stream, which then ends (the frames of the
    events whose seq is in `without_id` have no `id:` line)."""
    text = "".join(frame(e, with_id=e["seq"] not in without_id) for e in events)
    if retry_ms is not None:
        text = f"retry: {retry_ms}\n\n" + text
    return lambda request: Response(text, mimetype="text/event-stream", headers=headers)


def status(code: int, error: str = "error", message: str = "no", **details: Any) -> Any:
    body = {"error": {"code": error, "message": message, "details": details or None}}
    return lambda request: Response(json.dumps(body), status=code, mimetype="application/json")


class Script:
    """A server answering each request with the next answer (the last one repeats), and
    recording what each request asked for."""

    def __init__(self, *answers: Callable[[Request], Response]) -> None:
        self.answers = list(answers)
        self.asked: list[dict[str, str | None]] = []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        self.asked.append(
            {
                "path": request.path,
                "after": request.args.get("after"),
                "last_event_id": request.headers.get("Last-Event-ID"),
                "authorization": request.headers.get("Authorization"),
            }
        )
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return answer(request)(environ, start_response)


@pytest.fixture
def scripted() -> Iterator[Callable[..., tuple[LiveServer, Script]]]:
    servers = []

    def start(*answers: Callable[[Request], Response]) -> tuple[LiveServer, Script]:
        script = Script(*answers)
        context = serve(script)
        servers.append(context)
        return context.__enter__(), script

    yield start
    for context in servers:
        context.__exit__(None, None, None)


def follower(url: str | list[str], **options: Any) -> Follower:
    options = {"backoff": Backoff(first=0.01, most=0.05), "retry_for": 10.0, **options}
    return Follower(url, "r", "sse", **options)


def test_a_stream_cut_short_is_resumed_after_the_last_event(scripted: Any) -> None:
    """The second connection asks for what follows the last event delivered; a server
    that sends some of them again does not get them delivered twice."""
    server, script = scripted(
        sse(event(1, "run_queued"), event(2, "run_started"), event(3)),
        sse(event(2, "run_started"), event(3), event(4), event(5, "run_finished")),
    )
    said: list[str] = []
    following = follower(server.url, on_retry=said.append)
    assert [e["seq"] for e in following] == [1, 2, 3, 4, 5]
    assert following.finished and following.final == event(5, "run_finished")
    assert (following.connections, following.cut_short, following.cursor.repeats) == (2, 1, 2)
    assert [(a["after"], a["last_event_id"]) for a in script.asked] == [(None, None), (None, "1-3")]
    assert said == ["the stream ended early; reconnecting after 1-3 in 0.01 s"]


def test_a_cursor_given_is_sent_as_after_then_last_event_id(scripted: Any) -> None:
    server, script = scripted(sse(event(4)), sse(event(5, "run_finished")))
    assert [e["seq"] for e in follower(server.url, after="1-3")] == [4, 5]
    assert [(a["after"], a["last_event_id"]) for a in script.asked] == [
        ("1-3", None),
        (None, "1-4"),
    ]


def test_a_server_restarting_is_waited_for(scripted: Any) -> None:
    server, _ = scripted(
        status(503, "unavailable", "event store unavailable"),
        status(502),
        sse(event(1, "run_finished", status="succeeded")),
    )
    said: list[str] = []
    events = list(follower(server.url, on_retry=said.append))
    assert [e["type"] for e in events] == ["run_finished"]
    assert said[0] == "503: event store unavailable; reconnecting from the start in 0.01 s"
    assert said[1].startswith("502: no; reconnecting from the start in 0.02 s")


def test_the_servers_retry_wish_sets_the_pause(scripted: Any) -> None:
    server, _ = scripted(sse(event(1), retry_ms=40), sse(event(2, "run_finished")))
    said: list[str] = []
    list(follower(server.url, on_retry=said.append))
    assert said == ["the stream ended early; reconnecting after 1-1 in 0.04 s"]


def test_a_run_finished_at_the_cursor_ends_the_follow_at_once(scripted: Any) -> None:
    server, _ = scripted(lambda request: Response(status=204))
    following = follower(server.url, after="1-9")
    assert list(following) == []
    assert following.ended and not following.finished and following.connections == 1


@pytest.mark.parametrize(
    ("answer", "error", "text"),
    [
        (status(404, "not_found", "unknown run 'r'"), ApiError, "404: unknown run 'r'"),
        (status(400, "bad_request", "bad cursor"), ApiError, "400: bad cursor"),
        (status(410, "cursor_expired", "trimmed", first_id="1-50"), CursorExpired, "410: trimmed"),
    ],
    ids=["unknown-run", "bad-cursor", "expired"],
)
def test_refusals_that_trying_again_cannot_cure_are_raised_at_once(
    scripted: Any, answer: Any, error: type[ApiError], text: str
) -> None:
    server, script = scripted(answer)
    with pytest.raises(error) as raised:
        list(follower(server.url, after="1-3"))
    assert str(raised.value).startswith(text) and type(raised.value) is error
    assert len(script.asked) == 1
    if error is CursorExpired:
        assert raised.value.details == {"first_id": "1-50"}


def test_a_gap_in_the_stream_is_raised(scripted: Any) -> None:
    server, _ = scripted(sse(event(1), event(2), event(4), event(5, "run_finished")))
    got = []
    with pytest.raises(EventGap):
        for e in follower(server.url):
            got.append(e["seq"])
    assert got == [1, 2]


def test_an_unreadable_event_is_reported_and_passed(scripted: Any) -> None:
    broken = {"id": "1-2", "type": "step_log", "seq": 2}
    stream = sse(event(1), broken, event(3, "run_finished"))

    def answer(request: Request) -> Response:
        response = stream(request)
        response.set_data(response.get_data().replace(json.dumps(broken).encode(), b"{oops"))
        return response

    server, _ = scripted(answer)
    skipped: list[tuple[str, str]] = []
    events = list(follower(server.url, on_skip=lambda *why: skipped.append(why)))
    assert [e["seq"] for e in events] == [1, 3]
    assert skipped[0][0] == "1-2" and skipped[0][1].startswith("not JSON")


def test_an_expired_run_token_gives_way_to_the_api_token(scripted: Any) -> None:
    server, script = scripted(status(401, "unauthorized", "expired"), sse(event(1, "run_finished")))
    events = list(follower(server.url, token="api", run_token="run"))
    assert len(events) == 1
    assert [a["authorization"] for a in script.asked] == ["Bearer run", "Bearer api"]
    assert (script.asked[1]["after"], script.asked[1]["last_event_id"]) == (None, None)


def test_a_refused_token_without_another_is_an_error(scripted: Any) -> None:
    server, _ = scripted(status(401, "unauthorized", "missing bearer token"))
    with pytest.raises(ApiError, match="401: missing bearer token"):
        list(follower(server.url, token="wrong"))


def test_reconnecting_gives_up_after_retry_for() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    said: list[str] = []
    started = time.monotonic()
    with pytest.raises(GaveUp, match=r"run r: no stream for 0.3 s, last: connection lost"):
        list(follower(dead, retry_for=0.3, on_retry=said.append))
    assert 0.2 < time.monotonic() - started < 3
    assert len(said) >= 3


def test_each_reconnection_goes_to_the_next_server(scripted: Any) -> None:
    server, _ = scripted(sse(event(1)), sse(event(2, "run_finished")))
    dead = f"http://127.0.0.1:{free_port()}"
    following = follower([dead, server.url])
    assert [e["seq"] for e in following] == [1, 2]
    # dead, then the server (event 1), dead again, the server (the rest).
    assert following.base_url == server.url and following.cut_short == 3


def test_a_follower_is_read_as_it_goes(scripted: Any) -> None:
    """Events come as they are sent, not when the stream ends."""
    gate = threading.Event()

    def slow(request: Request) -> Response:
        def body() -> Iterator[str]:
            yield f"id: 1-1\nevent: step_log\ndata: {json.dumps(event(1))}\n\n"
            gate.wait(10)
            yield f"id: 1-2\nevent: run_finished\ndata: {json.dumps(event(2, 'run_finished'))}\n\n"

        return Response(body(), mimetype="text/event-stream")

    server, _ = scripted(slow)
    events = iter(follower(server.url))
    assert next(events)["seq"] == 1  # while the server holds the rest back
    gate.set()
    assert [e["seq"] for e in events] == [2]


# -- edges: nothing skipped without a word, a backoff that always grows -------------------


def test_a_server_retry_of_zero_does_not_stop_the_backoff_from_growing() -> None:
    """A server's `retry: 0` (legal SSE) must not make every pause 0 (0 * 2 = 0): a
    restarting server answering 503 would be asked again in a tight loop."""
    backoff = Backoff()
    backoff.server_wish(0)
    backoff.reset()  # an event was delivered
    pauses = [backoff.pause() for _ in range(8)]
    assert max(pauses) > 0, pauses


def test_a_frame_without_an_id_line_is_not_taken_for_a_repeat(scripted: Any) -> None:
    """The SSE decoder carries the previous frame's id over (WHATWG): the event's own
    `id` is what places it, or a frame without an `id:` line would read as a repeat."""
    answer = sse(
        event(1, "run_queued"),
        event(2, "run_started"),
        event(3, "run_finished"),
        without_id=frozenset({2}),
    )
    server, _ = scripted(answer)
    assert [e["seq"] for e in follower(server.url)] == [1, 2, 3]


def test_following_a_trimmed_stream_from_its_start_says_so(scripted: Any) -> None:
    """A run whose oldest events were trimmed (STEPSTREAM_EVENT_MAXLEN) answers a follow
    from the start with what it kept: the follower delivers it, and says first how many
    events are gone (`on_trimmed`, `cursor.trimmed`)."""
    trimmed = sse(event(5), event(6, "run_finished"), headers={"Stepstream-Trimmed": "4"})
    server, _ = scripted(trimmed)
    seen: list[str] = []
    following = follower(server.url, on_trimmed=lambda count: seen.append(f"trimmed {count}"))
    for e in following:
        seen.append(f"seq {e['seq']}")
    assert seen == ["trimmed 4", "seq 5", "seq 6"]
    assert following.cursor.trimmed == 4


def test_the_suites_follower_lets_a_test_see_a_servers_repeats(scripted: Any) -> None:
    """The suite's exactly-once tests (test_redis_outage.py, test_takeover.py) compare
    `tests/clients.Follower.events` with the stored stream; the library drops an event
    sent twice, so the suite's helper fails on any repeat rather than hide it."""
    from clients import Follower as SuiteFollower

    server, _ = scripted(
        sse(event(1, "run_queued"), event(2, "run_started")),
        # The server resends event 2 after the reconnection: a duplicate delivery.
        sse(event(2, "run_started"), event(3, "run_finished")),
    )
    following = SuiteFollower(server.url, "r", "sse")
    with pytest.raises(AssertionError, match="1 event\\(s\\) were sent again"):
        following.run(deadline_s=5)
