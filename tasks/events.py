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
from typing import Any

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1

#: A Redis stream id, `<ms>-<seq>`; also accepted: `0` meaning "from the beginning".
STREAM_ID = re.compile(r"^(0|\d{1,20}-\d{1,20})$")

TERMINAL_TYPE = "run_finished"


@dataclass(frozen=True)
class Event:
    """One entry of a run's stream: its stream `id` and the event fields."""

    id: str
    data: dict[str, Any]

    @property
    def type(self) -> str:
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
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def decode(cls, entry_id: str | bytes, raw: str | bytes) -> Event | None:
        """Decode a stream entry's `data`; None (and a log line) if unreadable."""
        eid = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
        try:
            data = json.loads(raw)
        except (ValueError, TypeError):
            log.warning("skipping event %s: not JSON", eid)
            return None
        if not isinstance(data, dict) or data.get("schema_version") != SCHEMA_VERSION:
            log.warning("skipping event %s: unknown schema_version", eid)
            return None
        return cls(eid, data)


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
