"""The worker registry as the web sees it, for `GET /api/workers` and `/readyz`."""

from __future__ import annotations

from tasks.workers import Registry, read_registry

from .services import services


def registry() -> Registry:
    """The registry now; rows old enough to forget (or not a worker's) are removed."""
    svc = services()
    # Ages on Redis' clock, the one that stamped the heartbeats: this host's may differ.
    rows, now = svc.store.workers.read()
    current = read_registry(
        rows,
        now=now,
        heartbeat_s=svc.settings.heartbeat_s,
        expected=svc.settings.expected_workers,
    )
    svc.store.workers.forget(current.forget)
    return current
