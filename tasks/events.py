"""The event: one frozen, versioned type that readers decode from a stream entry.

Events are assembled atomically inside the run scripts (see `lua/prelude.lua`); Python
only decodes them. A reader skips what it cannot decode and says so in the log, so a
newer writer never breaks an older reader.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

from .statuses import EventType
from .strict_json import sanitized

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1

#: A Redis stream id, `<ms>-<seq>`; also accepted: `0` meaning "from the beginning".
#: ASCII digits only: `\d` would take any script's digits, which Redis refuses.
STREAM_ID = re.compile(r"^(0|[0-9]{1,20}-[0-9]{1,20})$")

TERMINAL_TYPE = EventType.RUN_FINISHED


#: How every event the run scripts write begins (see `emit` in `lua/prelude.lua`).
WRITTEN_PREFIX = '{"schema_version":1,"type":"'


@dataclass(frozen=True)
class Event:
    """One entry of a run's stream: its stream `id` and the event's JSON as stored.

    The JSON is parsed only when a field is asked for: relaying an event (replay, live
    fan-out) needs just its type, read from the fixed way the scripts begin it, and its
    wire form, the stored text with the `id` spliced in.
    """

    id: str
    raw: str

    @classmethod
    def from_data(cls, entry_id: str, data: dict[str, Any]) -> Event:
        return cls(entry_id, json.dumps(sanitized(data), separators=(",", ":"), allow_nan=False))

    @cached_property
    def data(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.raw)
        return data

    @property
    def type(self) -> str:
        if self.raw.startswith(WRITTEN_PREFIX):
            return self.raw[len(WRITTEN_PREFIX) : self.raw.index('"', len(WRITTEN_PREFIX))]
        return str(self.data.get("type", ""))

    @property
    def seq(self) -> int:
        return int(self.data.get("seq", 0))

    @property
    def is_final(self) -> bool:
        return self.type == TERMINAL_TYPE

    def to_dict(self) -> dict[str, Any]:
        """The event as delivered to clients: its fields plus its `id`."""
        return {**self.data, "id": self.id}

    def encode(self) -> str:
        """The wire form: the stored JSON with `"id"` added as its last member."""
        return f'{self.raw[:-1]},"id":"{self.id}"}}'

    @classmethod
    def decode(cls, entry_id: str | bytes, raw: str | bytes) -> Event | None:
        """Read a stream entry's `data`; None (and a log line) if unreadable."""
        eid = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
        text = raw.decode() if isinstance(raw, bytes) else raw
        if (
            isinstance(text, str)
            and text.startswith(WRITTEN_PREFIX)
            and text.endswith("}")
            and not _maybe_not_finite(text)
        ):
            return cls(eid, text)  # written by the run scripts: well formed by construction
        try:
            data = json.loads(text)
        except (ValueError, TypeError):
            log.warning("skipping event %s: not JSON", eid)
            return None
        if not isinstance(data, dict) or data.get("schema_version") != SCHEMA_VERSION:
            log.warning("skipping event %s: unknown schema_version", eid)
            return None
        return cls.from_data(eid, data)


def _maybe_not_finite(text: str) -> bool:
    """Whether `text` holds words that, outside a string, are JSON only to Python:
    events stored before inputs were checked may. Such an event is parsed and written
    again as strict JSON (`strict_json.sanitized`: null for those numbers, as
    JavaScript writes them). Two substring searches, a third of what a regex costs."""
    return "NaN" in text or "Infinity" in text


#: Both halves of a Redis stream id are unsigned 64-bit integers.
MAX_ID_PART = 2**64 - 1


def is_stream_id(value: str) -> bool:
    """Whether `value` is `0` or an id Redis could have given, `<ms>-<seq>`."""
    if not STREAM_ID.fullmatch(value):
        return False
    return all(int(part) <= MAX_ID_PART for part in value.split("-"))


def canonical_id(value: str) -> str:
    """A stream id as Redis writes it (no leading zeros); `value` passed is_stream_id."""
    if value == "0":
        return value
    ms, seq = value.split("-")
    return f"{int(ms)}-{int(seq)}"


def first_id_after(after: str) -> str | None:
    """The smallest stream id greater than `after`; None when `after` is the largest.

    An inclusive XRANGE start computed here replaces Redis' exclusive `(id` form, which
    Redis refuses for the largest possible id.
    """
    if after in ("", "0"):
        return "0-0"
    ms, seq = (int(part) for part in after.split("-"))
    if seq < MAX_ID_PART:
        return f"{ms}-{seq + 1}"
    if ms < MAX_ID_PART:
        return f"{ms + 1}-0"
    return None


def id_key(entry_id: str) -> tuple[int, int]:
    """A stream id as a pair that orders as Redis orders ids (`0` is the smallest)."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


#: Where a cursor stands against what a run's stream holds.
CursorPlace = Literal["ok", "beyond", "trimmed", "finished"]


@dataclass(frozen=True)
class Retained:
    """The ends of what a run's stream still holds (ids None when it is empty)."""

    first_id: str | None = None
    #: The `seq` of the first event kept: above 1 once `MAXLEN` trimming dropped some.
    first_seq: int = 1
    last_id: str | None = None
    #: Whether the last event is `run_finished` (nothing is appended after it).
    finished: bool = False

    @property
    def trimmed(self) -> bool:
        return self.first_seq > 1

    def place(self, after: str) -> CursorPlace:
        """Where `after` stands: `ok` to read from; `beyond` the last event (no event
        of the stream can follow it); `finished`, the id of `run_finished` (nothing
        more will come); or `trimmed`, older than the first event kept while earlier
        ones were dropped (reading on would skip events silently).

        `0` (and `0-0`) asks for everything kept, so it is never `trimmed`: a reader of
        a trimmed stream sees that from the first event's `seq`.
        """
        cursor = id_key(after)
        last = id_key(self.last_id or "0")
        if cursor > last:
            return "beyond"
        if self.finished and cursor == last:
            return "finished"
        if self.trimmed and self.first_id and (0, 0) < cursor < id_key(self.first_id):
            return "trimmed"
        return "ok"


def retained_of(head: list[Any], tail: list[Any]) -> Retained:
    """`Retained` from the replies of `XRANGE - + COUNT 1` and `XREVRANGE + - COUNT 1`."""
    if not head or not tail:
        return Retained()
    first = Event.decode(head[0][0], head[0][1].get("data", ""))
    last = Event.decode(tail[0][0], tail[0][1].get("data", ""))
    return Retained(
        first_id=head[0][0],
        first_seq=first.seq if first is not None else 1,
        last_id=tail[0][0],
        finished=last is not None and last.is_final,
    )
