"""What a worker process needs to run steps, built once per process on first use.

Built lazily rather than at import so that settings are read when the worker starts,
and so that each prefork child opens its own Redis connections after the fork.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import cache

from .config import Settings
from .store import RunStore
from .tools import ToolRegistry, default_registry


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    store: RunStore
    tools: ToolRegistry


_lock = threading.Lock()


@cache
def _build() -> Runtime:
    settings = Settings.from_env()
    store = RunStore.from_settings(settings, retry_s=settings.redis_retry_s)
    return Runtime(settings, store, default_registry())


def get_runtime() -> Runtime:
    with _lock:
        return _build()
