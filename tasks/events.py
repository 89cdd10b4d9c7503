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
from typing import Any

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1

#: A Redis stream id, `<ms>-<seq>`; also accepted: `0` meaning "from the beginning".
STREAM_ID = re.compile(r"^(0|\d{1,20}-\d{1,20})$")

TERMINAL_TYPE = "run_finished"


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
        return cls(entry_id, json.dumps(data, separators=(",", ":")))

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
        if isinstance(text, str) and text.startswith(WRITTEN_PREFIX) and text.endswith("}"):
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


#: Both halves of a Redis stream id are unsigned 64-bit integers.
MAX_ID_PART = 2**64 - 1


def is_stream_id(value: str) -> bool:
    """Whether `value` is `0` or an id Redis could have given, `<ms>-<seq>`."""
    if not STREAM_ID.match(value):
        return False
    return all(int(part) <= MAX_ID_PART for part in value.split("-"))


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
