"""The worker registry as the web sees it, for `GET /api/workers` and `/readyz`."""

from __future__ import annotations

import time
from typing import cast

from tasks import keys
from tasks.workers import Registry, read_registry

from .services import services


def registry() -> Registry:
    """The registry now; rows old enough to forget (or not a worker's) are removed."""
    svc = services()
    client = svc.store.redis
    current = read_registry(
        cast("dict[str, str]", client.hgetall(keys.workers())),
        now=time.time(),
        heartbeat_s=svc.settings.heartbeat_s,
        expected=svc.settings.expected_workers,
    )
    if current.forget:
        client.hdel(keys.workers(), *current.forget)
    return current
