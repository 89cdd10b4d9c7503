"""Edges of the client library's follower (client/follow.py) against scripted SSE
servers: exactly once, nothing skipped without a word, a backoff that always grows."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import LiveServer, serve
from werkzeug.wrappers import Request, Response

from client.follow import Backoff, Follower


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


class Script:
    """Answers each request with the next answer (the last one repeats)."""

    def __init__(self, *answers: Callable[[Request], Response]) -> None:
        self.answers = list(answers)
        self.asked: list[dict[str, str | None]] = []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        self.asked.append(
            {"after": request.args.get("after"), "last": request.headers.get("Last-Event-ID")}
        )
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return answer(request)(environ, start_response)


@pytest.fixture
def scripted() -> Iterator[Callable[..., tuple[LiveServer, Script]]]:
    contexts = []

    def start(*answers: Callable[[Request], Response]) -> tuple[LiveServer, Script]:
        script = Script(*answers)
        context = serve(script)
        contexts.append(context)
        return context.__enter__(), script

    yield start
    for context in contexts:
        context.__exit__(None, None, None)


def follower(url: str, **options: Any) -> Follower:
    options = {"backoff": Backoff(first=0.01, most=0.05), "retry_for": 5.0, **options}
    return Follower(url, "r", "sse", **options)


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
    body = (
        frame(event(1, "run_queued"))
        + frame(event(2, "run_started"), with_id=False)
        + frame(event(3, "run_finished"))
    )
    server, _ = scripted(lambda request: Response(body, mimetype="text/event-stream"))
    assert [e["seq"] for e in follower(server.url)] == [1, 2, 3]


def test_following_a_trimmed_stream_from_its_start_says_so(scripted: Any) -> None:
    """A run whose oldest events were trimmed (STEPSTREAM_EVENT_MAXLEN) answers a follow
    from the start with what it kept: the follower delivers it, and says first how many
    events are gone (`on_trimmed`, `cursor.trimmed`)."""
    body = frame(event(5)) + frame(event(6, "run_finished"))

    def trimmed(request: Request) -> Response:
        response = Response(body, mimetype="text/event-stream")
        response.headers["Stepstream-Trimmed"] = "4"
        return response

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
        lambda request: Response(
            frame(event(1, "run_queued")) + frame(event(2, "run_started")),
            mimetype="text/event-stream",
        ),
        # The server resends event 2 after the reconnection: a duplicate delivery.
        lambda request: Response(
            frame(event(2, "run_started")) + frame(event(3, "run_finished")),
            mimetype="text/event-stream",
        ),
    )
    following = SuiteFollower(server.url, "r", "sse")
    with pytest.raises(AssertionError, match="1 event\\(s\\) were sent again"):
        following.run(deadline_s=5)
