"""The SSE decoder's fast path (a typical message read whole, a block of lines at a
time) against its rule-by-rule reading, line by line: same messages, same state,
whatever the line endings and wherever the chunks are cut.

The WHATWG rules themselves: tests/integration/test_cli.py (the SSE reader on its own)."""

from __future__ import annotations

import pytest

from client.sse import SSEDecoder, SSEMessage, sse_lines

#: What the server writes (`id`, `event`, `data`, blank line), among everything else a
#: stream may hold: comments, a bare `data`, several data lines, an id with NUL, an
#: empty id, an event without id, a message without event, blank lines in a row, a
#: field without colon, a `retry`, non-ASCII text, and an event name never dispatched.
STREAM = (
    ": stream open\n\n"
    'id: 1-1\nevent: step_log\ndata: {"seq":1,"message":"h\u00e9"}\n\n'
    'id: 1-2\nevent: step_log\ndata: {"seq":2}\n\n'
    ": keepalive\n\n"
    "id: 1-3\ndata: first line\ndata: second line\n\n"
    "data\n\n"
    "id: bad\x00id\nevent: odd\ndata: kept the last id\n\n"
    "event: no_id\ndata: no id line\n\n"
    "id: 2-0\ndata: no event line\n\n\n\n"
    "retry: 250\nid\ndata: the id emptied\n\n"
    "data:no space\n\n"
    "event: lost\n\n"
    "id: 3-0\ndata: \u2028 not a line break\n\n"
    "id: 3-1\nevent: step_log\ndata: \n\n"
    "id: 3-2\nevent: cut\ndata: never dispatched"
)


def rule_by_rule(text: str) -> tuple[list[SSEMessage], SSEDecoder]:
    """The reference: every line through `SSEDecoder.feed`, which has every rule."""
    decoder = SSEDecoder()
    messages = [decoder.feed(line) for line in sse_lines([text.encode()])]
    return [m for m in messages if m is not None], decoder


def pushed(chunks: list[bytes]) -> tuple[list[SSEMessage], SSEDecoder]:
    decoder = SSEDecoder()
    messages = [m for chunk in chunks for m in decoder.feed_bytes(chunk)]
    return messages + decoder.feed_bytes(b""), decoder


def test_the_reference_reads_the_stream_as_the_standard_says() -> None:
    expected, decoder = rule_by_rule(STREAM)
    assert [(m.id, m.event, m.data) for m in expected] == [
        ("1-1", "step_log", '{"seq":1,"message":"h\u00e9"}'),
        ("1-2", "step_log", '{"seq":2}'),
        ("1-3", "message", "first line\nsecond line"),
        ("1-3", "message", ""),
        ("1-3", "odd", "kept the last id"),
        ("1-3", "no_id", "no id line"),
        ("2-0", "message", "no event line"),
        ("", "message", "the id emptied"),
        ("", "message", "no space"),
        ("3-0", "message", "\u2028 not a line break"),
        ("3-1", "step_log", ""),
    ]
    assert decoder.retry_ms == 250 and decoder.last_event_id == "3-2"


@pytest.mark.parametrize("eol", ["\n", "\r\n", "\r"])
def test_a_stream_in_one_chunk_reads_as_line_by_line(eol: str) -> None:
    text = STREAM.replace("\n", eol)
    expected, reference = rule_by_rule(STREAM)
    got, decoder = pushed([text.encode()])
    assert got == expected
    assert (decoder.last_event_id, decoder.retry_ms) == (reference.last_event_id, 250)


@pytest.mark.parametrize("eol", ["\n", "\r\n", "\r"])
def test_a_stream_cut_in_two_anywhere_reads_the_same(eol: str) -> None:
    data = STREAM.replace("\n", eol).encode()
    expected, _ = rule_by_rule(STREAM)
    for cut in range(len(data) + 1):
        got, decoder = pushed([data[:cut], data[cut:]])
        assert got == expected, f"cut at byte {cut}"
        assert decoder.last_event_id == "3-2", f"cut at byte {cut}"


def test_a_stream_fed_byte_by_byte_reads_the_same() -> None:
    data = STREAM.encode()
    expected, _ = rule_by_rule(STREAM)
    assert pushed([data[i : i + 1] for i in range(len(data))])[0] == expected
    pulled = SSEDecoder().messages(data[i : i + 7] for i in range(0, len(data), 7))
    assert list(pulled) == expected


def test_a_message_pending_across_chunks_is_not_read_as_a_new_one() -> None:
    """Lines of a message that came before a chunk's first blank line belong to it:
    the block after them is never taken for a message of its own."""
    decoder = SSEDecoder()
    assert decoder.feed_bytes(b"event: early\ndata: one\n") == []
    assert decoder.feed_bytes(b"data: two\n\nid: 5-0\ndata: three\n\n") == [
        SSEMessage("one\ntwo", "early", ""),
        SSEMessage("three", "message", "5-0"),
    ]
    assert decoder.feed_bytes(b"event: x\n") == []
    assert decoder.feed_bytes(b"\nid: 6-0\nevent: y\ndata: four\n\n") == [
        SSEMessage("four", "y", "6-0")  # the blank line dropped `x` with no data
    ]


def test_comments_reach_on_comment_between_typical_messages() -> None:
    comments: list[str] = []
    decoder = SSEDecoder(on_comment=comments.append)
    got = decoder.feed_bytes(STREAM.encode())
    assert comments == ["stream open", "keepalive"]
    assert got == rule_by_rule(STREAM)[0]
