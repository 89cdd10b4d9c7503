"""Server-Sent Events read as the WHATWG standard says: the one parser of the project,
used by the command line, the tests and any program that follows a run over SSE."""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

#: SSE lines end at CRLF, CR or LF and nowhere else: not at U+2028, U+2029, U+0085 or
#: the other breaks `str.splitlines` knows, which are ordinary characters in event data.
_EOL = re.compile(r"\r\n|\r|\n")


def sse_lines(chunks: Iterable[bytes]) -> Iterator[str]:
    """The lines of an event stream (WHATWG HTML, "Parsing an event stream"): UTF-8
    decoded (bad bytes become U+FFFD, a leading BOM is dropped), split at CRLF, CR or LF
    wherever the chunks happen to be cut. An unterminated last line is not a line."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pending = ""
    at_start = True
    for chunk in chunks:
        text = decoder.decode(chunk)
        if at_start and text:
            text, at_start = text.removeprefix("\ufeff"), False
        buffer = pending + text
        # A CR at the very end may be the first half of a CRLF: decide with the next chunk.
        cut = len(buffer) - 1 if buffer.endswith("\r") else len(buffer)
        *lines, tail = _EOL.split(buffer[:cut])
        pending = tail + buffer[cut:]
        yield from lines
    if pending.endswith("\r"):
        yield pending[:-1]


@dataclass(frozen=True)
class SSEMessage:
    """One dispatched event: its data lines joined with LF, its type and the last id."""

    data: str
    event: str = "message"
    id: str = ""


class SSEDecoder:
    """Turns lines into messages as the WHATWG standard says: `data` lines accumulate,
    `event` names the type, `id` (without NUL) sets the last event id, `retry` (digits
    only) the reconnection time, `:` lines are comments, unknown fields are ignored, and
    a blank line dispatches (nothing, when no data came)."""

    def __init__(self) -> None:
        self.last_event_id = ""
        self.retry_ms: int | None = None
        self._data: list[str] = []
        self._event = ""

    def messages(self, chunks: Iterable[bytes]) -> Iterator[SSEMessage]:
        for line in sse_lines(chunks):
            message = self.feed(line)
            if message is not None:
                yield message

    def feed(self, line: str) -> SSEMessage | None:
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon:
            value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self.last_event_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry_ms = int(value)
        return None

    def _dispatch(self) -> SSEMessage | None:
        data, event = self._data, self._event
        self._data, self._event = [], ""
        if not data:
            return None
        return SSEMessage("\n".join(data), event or "message", self.last_event_id)
