"""What the web app's views share, kept in `app.extensions["stepstream"]`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import redis
from celery import Celery
from flask import current_app

from tasks.config import Settings
from tasks.store import RunStore
from tasks.tools import ToolRegistry

from .catalog import Catalog
from .metrics import Metrics


@dataclass(frozen=True)
class Services:
    settings: Settings
    store: RunStore
    #: A separate client for blocking stream reads, whose socket timeout outlasts them
    #: (redis-py's default would cut a long XREAD BLOCK short).
    blocking_redis: redis.Redis
    tools: ToolRegistry
    catalog: Catalog
    celery: Celery
    metrics: Metrics


def services() -> Services:
    return cast(Services, current_app.extensions["stepstream"])
