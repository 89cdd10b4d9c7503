"""Reading a run's events from a cursor: the cursor and limit arguments, how a cursor
is judged against what the stream holds, and `GET /api/runs/<id>/events` as JSON pages.

SSE and WebSocket (streaming.py) judge their cursor the same way before they stream.
"""

from __future__ import annotations

import re

from flask import Response, jsonify, request

from tasks.errors import InvalidRequest, NotFound, StepstreamError
from tasks.events import CursorPlace, Retained, canonical_id, is_stream_id

from . import errors
from .services import services

LIMIT = re.compile(r"[0-9]{1,5}")
#: Response header of a read from the beginning of a trimmed stream: how many events
#: were dropped before the first one it returns.
TRIMMED_HEADER = "Stepstream-Trimmed"


class CursorExpired(StepstreamError):
    """The events right after a cursor were trimmed away (`STEPSTREAM_EVENT_MAXLEN`)."""

    code = "cursor_expired"


errors.STATUS[CursorExpired] = 410


def limit_arg(default: int, maximum: int) -> int:
    raw = request.args.get("limit", str(default))
    if not LIMIT.fullmatch(raw) or not 1 <= int(raw) <= maximum:
        raise InvalidRequest(f"limit must be an integer from 1 to {maximum}")
    return int(raw)


def cursor_arg() -> str:
    """The start point of a stream read: `Last-Event-ID`, else `after`, else the start.

    The header wins: an EventSource reconnecting sends it with the URL it was opened
    with, whose `after` is where it began, not where it is.
    """
    after = request.headers.get("Last-Event-ID") or None
    if after is None:
        after = request.args.get("after")
    if after is None or after == "":
        return "0"
    if not is_stream_id(after):
        raise InvalidRequest(f"bad cursor {after!r}: expected a stream id like 1700000000000-0")
    return canonical_id(after)


def judge_cursor(run_id: str, after: str, exists: bool, retained: Retained) -> CursorPlace:
    """Refuse a cursor no read can honour; otherwise say where it stands.

    404 for an unknown run; 400 for an id beyond the stream's last event (no event can
    follow it: reading would wait for ever, and it must never become anyone's read
    position); 410 for an id older than the first event kept after trimming (reading
    on would skip events without a word: the client reloads the run instead and
    resumes from its `last_event_id`). Returns `ok` or `finished` (at `run_finished`).
    """
    if not exists:
        raise NotFound(f"unknown run {run_id!r}")
    place = retained.place(after)
    if place == "beyond":
        raise InvalidRequest(
            f"bad cursor {after!r}: beyond the last event of the run",
            {"last_id": retained.last_id},
        )
    if place == "trimmed":
        raise CursorExpired(
            f"cursor {after!r} is older than the first event kept: the events after it "
            "were trimmed; reload the run (GET /api/runs/<run_id>) and resume from its "
            "last_event_id",
            {"first_id": retained.first_id, "first_seq": retained.first_seq},
        )
    return place


def trimmed_headers(after: str, retained: Retained) -> dict[str, str]:
    """A read from the beginning of a trimmed stream says how much it lacks."""
    if after in ("0", "0-0") and retained.trimmed:
        return {TRIMMED_HEADER: str(retained.first_seq - 1)}
    return {}


def events_page(run_id: str) -> Response:
    """A page of the run's events after the cursor, as JSON, with `next_after`."""
    after = cursor_arg()
    limit = limit_arg(100, 1000)
    exists, retained, events = services().store.read_retained(run_id, (after, limit))
    judge_cursor(run_id, after, exists, retained)
    response = jsonify(
        {
            "events": [e.to_dict() for e in events],
            "next_after": events[-1].id if events else None,
        }
    )
    response.headers.update(trimmed_headers(after, retained))
    return response
