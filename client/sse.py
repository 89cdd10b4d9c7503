"""Server-Sent Events read as the WHATWG standard says: the one parser of the project,
used by the command line, the follower (client/follow.py), the tests and the benchmarks.

Pull (`SSEDecoder.messages` over an iterable of byte chunks) and push
(`SSEDecoder.feed_bytes`, for asyncio readers) share every rule."""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple

#: SSE lines end at CRLF, CR or LF and nowhere else: not at U+2028, U+2029, U+0085 or
#: the other breaks `str.splitlines` knows, which are ordinary characters in event data.
_EOL = re.compile(r"\r\n|\r|\n")


class SSELineSplitter:
    """The lines of an event stream (WHATWG HTML, "Parsing an event stream"), fed chunk
    by chunk: UTF-8 decoded (bad bytes become U+FFFD, a leading BOM is dropped), split
    at CRLF, CR or LF wherever the chunks happen to be cut."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""
        self._at_start = True

    def feed(self, chunk: bytes) -> list[str]:
        buffer = self._text(chunk)
        if "\r" not in buffer:  # LF only, as most servers write: the fast way
            *lines, self._pending = buffer.split("\n")
            return lines
        return self._split(buffer)

    def feed_blocks(self, chunk: bytes) -> tuple[list[str], list[str]]:
        """The same lines, grouped: the blocks the chunk completes (each the text of its
        lines up to a blank line, joined with LF, the blank line left out), then the
        complete lines after the last of them. Read as blocks, the messages of a
        stream cost one split each instead of a split per line."""
        buffer = self._text(chunk)
        if "\r" in buffer:  # CR or CRLF line endings: no blocks, just lines
            return [], self._split(buffer)
        *blocks, rest = buffer.split("\n\n")
        *lines, self._pending = rest.split("\n")
        return blocks, lines

    def _text(self, chunk: bytes) -> str:
        """The chunk decoded, after what is left of the line it continues."""
        text = self._decoder.decode(chunk)
        if self._at_start and text:
            text, self._at_start = text.removeprefix("\ufeff"), False
        return self._pending + text

    def _split(self, buffer: str) -> list[str]:
        # A CR at the very end may be the first half of a CRLF: decide with the next chunk.
        cut = len(buffer) - 1 if buffer.endswith("\r") else len(buffer)
        *lines, tail = _EOL.split(buffer[:cut])
        self._pending = tail + buffer[cut:]
        return lines

    def end(self) -> list[str]:
        """The last line, if the stream ended right after its CR; an unterminated last
        line is not a line."""
        return [self._pending[:-1]] if self._pending.endswith("\r") else []


def sse_lines(chunks: Iterable[bytes]) -> Iterator[str]:
    """Every line of a stream given as byte chunks (see `SSELineSplitter`)."""
    splitter = SSELineSplitter()
    for chunk in chunks:
        yield from splitter.feed(chunk)
    yield from splitter.end()


class SSEMessage(NamedTuple):
    """One dispatched event: its data lines joined with LF, its type and the last id.

    A named tuple: made for every event a client reads, it costs half what a frozen
    dataclass does."""

    data: str
    event: str = "message"
    id: str = ""


#: A message as this project's server writes it, alone in its block of lines: an
#: optional `id` (without NUL, which would make the field ignored), an optional `event`
#: and one `data` line. Read with one match instead of a rule per line.
_TYPICAL = re.compile(r"(?:id: ([^\n\0]*)\n)?(?:event: ([^\n]*)\n)?data: ([^\n]*)")

#: The blank line that ends a block.
_BLANK = [""]


class SSEDecoder:
    """Turns lines into messages as the WHATWG standard says: `data` lines accumulate,
    `event` names the type, `id` (without NUL) sets the last event id, `retry` (digits
    only) the reconnection time, `:` lines are comments (given to `on_comment`, if any,
    without the colon and one leading space), unknown fields are ignored, and a blank
    line dispatches (nothing, when no data came)."""

    def __init__(self, on_comment: Callable[[str], None] | None = None) -> None:
        self.last_event_id = ""
        self.retry_ms: int | None = None
        self.on_comment = on_comment
        self._data: list[str] = []
        self._event = ""
        self._lines = SSELineSplitter()

    def messages(self, chunks: Iterable[bytes]) -> Iterator[SSEMessage]:
        """The messages of a whole stream, read as the chunks come."""
        for chunk in chunks:
            if chunk:
                yield from self.feed_bytes(chunk)
        yield from self.feed_bytes(b"")

    def feed_bytes(self, chunk: bytes) -> list[SSEMessage]:
        """The messages one more chunk of the stream completes (for push-style readers);
        `b""` when the stream has ended."""
        if not chunk:
            return self._feed_lines(self._lines.end(), [])
        blocks, tail = self._lines.feed_blocks(chunk)
        messages: list[SSEMessage] = []
        for block in blocks:
            # A block is the lines up to a blank one. When nothing is pending from
            # earlier lines, a typical message is read whole; anything else line by
            # line, with every rule, the blank line last.
            typical = None if self._data or self._event else _TYPICAL.fullmatch(block)
            if typical is None:
                self._feed_lines(block.split("\n"), messages)
                self._feed_lines(_BLANK, messages)
                continue
            event_id, event, data = typical.groups()
            if event_id is not None:
                self.last_event_id = event_id
            messages.append(SSEMessage(data, event or "message", self.last_event_id))
        return self._feed_lines(tail, messages)

    def _feed_lines(self, lines: list[str], messages: list[SSEMessage]) -> list[SSEMessage]:
        """Feeds `lines` in order, adding what they dispatch to `messages`."""
        for line in lines:
            # The lines of a typical event inline; anything else through `feed`, which
            # has every rule.
            if line.startswith("data: "):
                self._data.append(line[6:])
            elif line == "":
                message = self._dispatch()
                if message is not None:
                    messages.append(message)
            else:
                self.feed(line)
        return messages

    def feed(self, line: str) -> SSEMessage | None:
        """One line; the message it dispatches, if any."""
        if line == "":
            return self._dispatch()
        name, colon, value = line.partition(":")
        if colon:
            value = value.removeprefix(" ")
        if name == "":
            if self.on_comment is not None:
                self.on_comment(value)
        elif name == "data":
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
