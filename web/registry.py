"""The worker registry as the web sees it, for `GET /api/workers` and `/readyz`."""

from __future__ import annotations

from typing import cast

from tasks import keys
from tasks.watch import time_seconds
from tasks.workers import Registry, read_registry

from .services import services


def registry() -> Registry:
    """The registry now; rows old enough to forget (or not a worker's) are removed."""
    svc = services()
    client = svc.store.redis
    # Ages on Redis' clock, the one that stamped the heartbeats: this host's may differ.
    pipe = client.pipeline(transaction=False)
    pipe.hgetall(keys.workers())
    pipe.time()
    rows, time_reply = pipe.execute()
    current = read_registry(
        cast("dict[str, str]", rows),
        now=time_seconds(time_reply),
        heartbeat_s=svc.settings.heartbeat_s,
        expected=svc.settings.expected_workers,
    )
    if current.forget:
        client.hdel(keys.workers(), *current.forget)
    return current
