"""The run scripts (`lua/*.lua`), loaded into a client, and what every part of the
run store shares.

Each script is its file with `lua/prelude.lua` in front. The store is one class made
of parts, one module each (see `store.RunStore`); `StorePart` is what they share: the
client, the settings, the scripts and the all-runs feed.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

import redis
from redis.commands.core import Script

from . import keys
from .config import Settings
from .events import Event
from .feed import AllEventsFeed

#: Every script the store runs, by the name of its file in `lua/`.
SCRIPTS = (
    "create_run",
    "start_run",
    "queued_roots",
    "forget_dispatches",
    "withdraw_runs",
    "attempt_inputs",
    "start_step",
    "step_event",
    "finish_step",
    "continuation",
    "cancel_run",
    "enforce_cancel",
    "resume_step",
    "sweep_check",
    "reindex_run",
)


@cache  # package files: read once per process, not once per script
def prelude() -> str:
    """What every script builds on: `lua/prelude.lua`, then the Lua of each step kind
    that has some (`lua/kinds/<kind>.lua`, see `ENTER_KIND`)."""
    lua = resources.files("tasks") / "lua"
    kinds = lua / "kinds"
    parts = [lua / "prelude.lua"]
    if kinds.is_dir():
        parts += sorted(
            (f for f in kinds.iterdir() if f.name.endswith(".lua")), key=lambda f: f.name
        )
    return "\n".join(part.read_text() for part in parts)


def load_script(name: str) -> str:
    """The text of script `name`, with the prelude it builds on."""
    return prelude() + "\n" + (resources.files("tasks") / "lua" / f"{name}.lua").read_text()


def register_scripts(client: redis.Redis) -> dict[str, Script]:
    """Every script, ready to run on `client` (loaded into Redis on first use)."""
    return {name: client.register_script(load_script(name)) for name in SCRIPTS}


def decode_events(flat: list[str]) -> list[Event]:
    """The events a script returns, as `[id, data, id, data, ...]`."""
    out = []
    for i in range(0, len(flat), 2):
        event = Event.decode(flat[i], flat[i + 1])
        if event is not None:
            out.append(event)
    return out


class StorePart:
    """What every part of the run store shares: set up by `store.RunStore`."""

    #: The store's client: private to the store's modules (nothing else reaches Redis
    #: through the store but by its methods).
    _redis: redis.Redis
    _scripts: dict[str, Script]
    settings: Settings
    #: The all-runs stream's copies of new runs' `run_queued`, fed in the background.
    feed: AllEventsFeed

    def _run(self, script: str, run_id: str, *args: Any) -> Any:
        """Run script `script` on the keys of run `run_id`."""
        return self._scripts[script](keys=keys.run_keys(run_id), args=list(args))

    def _forget_older_than(self, created_us: int) -> None:
        """Drop from the indexes a few runs that may have expired (see run_index)."""
        raise NotImplementedError

    def forget_expired(self, run_ids: list[str]) -> None:
        """Drop from the indexes those of `run_ids` whose keys have expired (run_index)."""
        raise NotImplementedError

    def publish_all(self, events: list[Event]) -> None:
        """Copy events to the all-runs stream, best effort and off the caller's path: a
        new run's `run_queued` (the scripts copy every other event themselves)."""
        self.feed.put(events)
