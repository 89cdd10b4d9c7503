"""The fast paths of a chatty step's events write exactly what the general ones do."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tasks.messages import clean
from tasks.transitions import _encode, _members

MESSAGES = [
    "",
    "42",
    'quote " backslash \\ slash /',
    "tab\tnewline\ncr\r",
    "\x00\x1f\x7f",
    "é ü 中文 😀",
    "line\u2028separator\u2029paragraph\x85next",
    "\ud800 lone surrogate",
    "x" * 9000,
]
FRACTIONS = [0.0, 1.0, 0.5, 1e-05, 1 / 3, 5e-324, 0.1 + 0.2]


@pytest.mark.parametrize("message", MESSAGES)
@pytest.mark.parametrize("fraction", FRACTIONS)
def test_a_progress_event_is_written_as_the_encoder_writes_it(
    fraction: float, message: str
) -> None:
    fields = {"progress": fraction, "message": clean(message)}
    assert _members(fields) == _encode(fields)[1:-1]
    assert json.loads("{" + _members(fields) + "}") == fields


@pytest.mark.parametrize(
    "fields",
    [
        {"progress": 1, "message": "an int"},
        {"progress": 0.5, "message": None},
        {"message": "a log line"},
        {"progress": 0.5, "note": "other members"},
        {"progress": 0.5, "message": "x", "extra": [1, {"a": True}]},
    ],
)
def test_other_fields_go_through_the_encoder(fields: dict[str, Any]) -> None:
    assert _members(fields) == _encode(fields)[1:-1]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_a_fraction_json_cannot_hold_is_refused_as_before(value: float) -> None:
    with pytest.raises(ValueError):
        _members({"progress": value, "message": "x"})


@pytest.mark.parametrize("message", [*MESSAGES, "a" * 8192, "a" * 8193, 12, None])
def test_clean_answers_ascii_text_as_it_did(message: Any) -> None:
    raw = str(message).encode("utf-8", "backslashreplace")
    if len(raw) <= 8192:
        assert clean(message) == raw.decode("utf-8")
    else:
        assert clean(message).endswith("more bytes truncated]")
        assert len(clean(message).encode()) <= 8192
