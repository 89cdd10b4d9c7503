"""The shortcuts a replay takes on every event, held to the rules they stand in for:
`decode_entries` makes what `Event.decode` makes, and the hub finds `run_finished` as
`Event.is_final` does, whether or not the run scripts wrote the event."""

from __future__ import annotations

import json

import pytest

from tasks.events import Event
from tasks.stream_reads import decode_entries
from web.hub import _until_final

WRITTEN = '{"schema_version":1,"type":"step_log","run_id":"r","seq":1,"message":"hi"}'

#: Entries as Redis gives them (flat field lists, or dicts): written by the scripts,
#: holding the words that may be non-finite numbers (inside strings or not), written
#: by something else (spaces, other key order), not JSON, unknown schema, other fields.
ENTRIES = [
    ("1-1", ["data", WRITTEN]),
    ("1-2", ["data", WRITTEN.replace('"hi"', '"NaN and Infinity are words"')]),
    ("1-3", ["data", WRITTEN.replace('"hi"', "NaN")]),
    ("1-4", ["data", WRITTEN.replace('"hi"', "-Infinity")]),
    ("1-5", ["data", json.dumps(json.loads(WRITTEN))]),
    ("1-6", ["data", '{"type":"step_log","schema_version":1,"seq":2}']),
    ("1-7", ["data", "{not json"]),
    ("1-8", ["data", '{"schema_version":99,"type":"step_log"}']),
    ("1-9", ["other", "x", "data", WRITTEN]),
    ("1-10", {"data": WRITTEN}),
    ("1-11", ["data", WRITTEN[:-1]]),
    ("1-12", ["data", WRITTEN + " "]),
]


def test_decoding_entries_makes_what_event_decode_makes() -> None:
    fields = [
        dict(zip(f[::2], f[1::2], strict=True)) if isinstance(f, list) else f for _, f in ENTRIES
    ]
    expected = [
        Event.decode(entry_id, f["data"]) for (entry_id, _), f in zip(ENTRIES, fields, strict=True)
    ]
    assert decode_entries(ENTRIES) == [e for e in expected if e is not None]
    assert len(decode_entries(ENTRIES)) == 9  # not JSON, unknown schema, cut short: left out


def final(raw: str) -> Event:
    event = Event.decode("9-9", raw)
    assert event is not None
    return event


@pytest.mark.parametrize(
    "last",
    [
        final('{"schema_version":1,"type":"run_finished","run_id":"r","seq":9}'),
        final('{"type": "run_finished", "schema_version": 1, "seq": 9}'),  # not the scripts'
    ],
)
def test_a_replay_stops_at_run_finished_however_it_was_written(last: Event) -> None:
    before = [e for e in decode_entries(ENTRIES[:6]) if not e.is_final]
    after = final(WRITTEN)
    assert _until_final([*before, last, after]) == ([*before, last], True)
    assert _until_final(before) == (before, False)
    lookalike = final(WRITTEN.replace('"step_log"', '"run_finished_soon"'))
    assert _until_final([lookalike]) == ([lookalike], False)
