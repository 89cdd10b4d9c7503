"""celery_hop_latency: one bare task re-enqueuing itself, the floor under a run's latency.

A hop is the time from one task starting to the next one starting: its apply_async,
the broker, and the worker picking the message up. run_latency_3 is three such hops
(the web sends the first step's task, each step the next one's) plus what stepstream
does in each.
"""

from __future__ import annotations

import itertools
import time
import uuid
from typing import Any, cast

from .bare_app import HOP
from .bare_worker import BareWorker, wait_done
from .report import figure, percentiles
from .stack import host


def chain_hops(bare: BareWorker, hops: int) -> list[float]:
    """Run one chain of `hops` re-enqueues; the gaps between task starts, in ms."""
    log_key = f"bench:hops:{uuid.uuid4()}"
    bare.app.send_task(HOP, args=[log_key, hops])
    wait_done(bare.redis, log_key, 60)
    starts = [float(s) for s in cast("list[str]", bare.redis.lrange(log_key, 0, -1))]
    return [(b - a) * 1000 for a, b in itertools.pairwise(starts)]


def celery_hop_latency(
    bare: BareWorker, chains: int = 20, hops: int = 20, warmup: int = 2
) -> dict[str, Any]:
    samples: list[float] = []
    for i in range(warmup + chains):
        gaps = chain_hops(bare, hops)
        if i >= warmup:
            samples += gaps
        time.sleep(0.01)
    return figure(
        "celery_hop_latency",
        percentiles(samples),
        "ms",
        f"{len(samples)} hops: {chains} chains of a bare task re-enqueuing itself {hops} "
        f"times, task start to next task start; 1 prefork worker x{bare.concurrency}, "
        f"stepstream's Celery settings, Redis broker on loopback, {host()} "
        "(run_latency_3 is 3 hops)",
    )
