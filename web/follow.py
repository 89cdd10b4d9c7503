"""Follow a run's stream: replay from a cursor, then tail it until `run_finished`.

The status and the next page are read in one MULTI, so a run seen finished with no
page left has truly nothing more to send: `run_finished` was written before the status
changed, in the same script.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

import redis

from tasks import keys
from tasks.events import Event, first_id_after
from tasks.store import TERMINAL_RUN

PAGE = 500


def follow(
    client: redis.Redis, blocking: redis.Redis, run_id: str, after: str, wait_s: float
) -> Iterator[Event | None]:
    """Yield events after `after` in order, and None after each `wait_s` of silence."""
    stream = keys.run_events(run_id)
    cursor = after if after not in ("", "0") else "0-0"
    while True:
        start = first_id_after(cursor)
        if start is None:  # nothing can come after the largest id there is
            return
        pipe = client.pipeline(transaction=True)
        pipe.hget(keys.run(run_id), "status")
        pipe.xrange(stream, min=start, max="+", count=PAGE)
        status, entries = pipe.execute()
        if not entries:
            if status is None or status in TERMINAL_RUN:
                return
            reply = cast(
                "list[Any]",
                blocking.xread({stream: cursor}, count=PAGE, block=int(wait_s * 1000)),
            )
            if not reply:
                yield None
                continue
            entries = reply[0][1]
        for entry_id, fields in entries:
            cursor = entry_id
            event = Event.decode(entry_id, fields.get("data", ""))
            if event is None:
                continue
            yield event
            if event.is_final:
                return
