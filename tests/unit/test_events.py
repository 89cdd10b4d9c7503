"""Events as relayed to clients: always strict JSON."""

from __future__ import annotations

import json

from tasks.events import Event


def test_events_stored_with_non_finite_numbers_are_relayed_as_strict_json() -> None:
    """An event written before inputs were checked may hold Infinity: it goes out as
    strict JSON (null), never as text a browser's JSON.parse refuses."""
    stored = '{"schema_version":1,"type":"run_queued","run_id":"r","seq":1,"input":{"x":Infinity}}'
    event = Event.decode("1-1", stored)
    assert event is not None
    wire = event.encode()
    json.loads(wire, parse_constant=lambda name: (_ for _ in ()).throw(ValueError(name)))
    assert json.loads(wire)["input"] == {"x": None} and json.loads(wire)["id"] == "1-1"
    text = '{"schema_version":1,"type":"step_log","run_id":"r","seq":2,"message":"NaN"}'
    assert Event.decode("1-2", text).encode() == text[:-1] + ',"id":"1-2"}'  # type: ignore[union-attr]
