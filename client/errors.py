"""What the client library raises: every error is a `ClientError` whose text is meant
for people (the command line prints it as it is)."""

from __future__ import annotations

import json
from typing import Any

from tasks.strict_json import sanitized


class ClientError(Exception):
    """Anything the client library raises on purpose."""


class Unreachable(ClientError):
    """The server could not be reached (refused, reset, timed out)."""


class ApiError(ClientError):
    """The server answered with an error (SPEC §6): `{"error": {code, message, details}}`,
    or, after a WebSocket upgrade, a close code 4xxx standing for the HTTP status."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        self.status, self.code, self.message, self.details = status, code, message, details
        text = f"{status}: {message}"
        if details:
            text += "\n" + json.dumps(details, indent=2)
        super().__init__(text)

    @classmethod
    def from_body(cls, status: int, body: bytes | str) -> ApiError:
        """The error an answer's body describes; a body that is not the API's error
        object (a proxy's page) is the message as it is. A 410 is a `CursorExpired`."""
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        try:
            error = sanitized(json.loads(text))["error"]
            code, message, details = str(error["code"]), str(error["message"]), error["details"]
        except (ValueError, KeyError, TypeError, RecursionError):
            code, message, details = "", sanitized(text), None
        kind = CursorExpired if status == 410 or code == CursorExpired.CODE else cls
        return kind(status, code, message, details)

    @classmethod
    def from_close(cls, close_code: int, reason: str) -> ApiError:
        """The refusal a WebSocket close code 4000 + status stands for (4410: a
        `CursorExpired`)."""
        status = close_code - 4000
        message = reason or f"WebSocket closed with {close_code}"
        if status == 410:
            return CursorExpired(status, CursorExpired.CODE, message)
        return cls(status, "", message)


class CursorExpired(ApiError):
    """410 `cursor_expired` (WebSocket: close 4410): the events after the cursor were
    trimmed from the run's stream, so following on would skip them without a word.
    Reload the run (`GET /api/runs/<id>`) and follow from its `last_event_id`."""

    CODE = "cursor_expired"


class GaveUp(ClientError):
    """Reconnecting did not bring the stream back within the follower's `retry_for`."""


class EventGap(ClientError):
    """The stream skipped an event (its `seq` does not follow the last one delivered):
    the exactly-once promise is broken, so the follower stops rather than hide it."""
