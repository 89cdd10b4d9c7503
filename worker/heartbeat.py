"""Worker heartbeats: each worker node records itself in `stepstream:workers`.

The heartbeat runs in the worker's main process, which sees every request it hands to
the pool (`celery.worker.state`), so its counts cover all of the node's children. Its
time is Redis' (stamped by the script that writes the row), so a worker whose clock is
off is judged by the same clock as everyone else. The sweeper has a thread of its own:
a long sweep never delays a heartbeat and makes its worker look dead.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
import uuid
from typing import Any

import redis
from celery.signals import worker_init, worker_ready, worker_shutdown
from celery.worker import state

from tasks import keys, redis_client
from tasks.config import Settings
from tasks.eviction import check_eviction_policy
from tasks.runtime import get_runtime
from tasks.workers import INCARNATION_ENV, incarnation

from .sweeper import Sweeper

log = logging.getLogger(__name__)

#: The name a worker's heartbeat connection carries in CLIENT LIST.
WORKER_CLIENT_NAME = "stepstream-worker"


#: Writes a worker's row with `last_heartbeat` from Redis' clock.
#: KEYS[1] the registry hash; ARGV[1] the worker's name; ARGV[2] the rest of the row's
#: JSON object, after its opening brace.
BEAT = """
local t = redis.call('TIME')
local now = string.format('%d.%06d', tonumber(t[1]), tonumber(t[2]))
redis.call('HSET', KEYS[1], ARGV[1], '{"last_heartbeat":' .. now .. ',' .. ARGV[2])
"""


class Heartbeat:
    """Daemon threads that write this worker's row and sweep, every `heartbeat_s` seconds."""

    def __init__(self, hostname: str, settings: Settings, concurrency: int | None = None) -> None:
        self.hostname = hostname
        self.concurrency = concurrency
        self.started_at = time.time()
        self.settings = settings
        self.redis = redis_client.connect(settings.redis_url, client_name=WORKER_CLIENT_NAME)
        self._beat = self.redis.register_script(BEAT)
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._beat_loop, name="stepstream-heartbeat", daemon=True),
            threading.Thread(target=self._sweep_loop, name="stepstream-sweeper", daemon=True),
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        with contextlib.suppress(redis.RedisError):
            self.redis.hdel(keys.workers(), self.hostname)

    def row(self) -> dict[str, Any]:
        active = {r.args[0] for r in list(state.active_requests) if r.args}
        return {
            "name": self.hostname,
            "pid": os.getpid(),
            "active_runs": len(active),
            "processed": sum(state.total_count.values()),
            "concurrency": self.concurrency,
            "started_at": self.started_at,
            "incarnation": incarnation(),
        }

    def beat(self) -> None:
        self._beat(keys=[keys.workers()], args=[self.hostname, json.dumps(self.row())[1:]])

    def _beat_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.beat()
            except redis.RedisError as exc:
                log.warning("heartbeat failed: %s", exc)
            except Exception:
                log.exception("heartbeat failed")
            self._stop.wait(self.settings.heartbeat_s)

    def _sweep_loop(self) -> None:
        sweeper = Sweeper(get_runtime().store, self.hostname)
        while not self._stop.is_set():
            try:
                sweeper.sweep()
            except redis.RedisError as exc:
                log.warning("sweeping for lost runs failed: %s", exc)
            except Exception:
                log.exception("sweeping for lost runs failed")
            self._stop.wait(self.settings.heartbeat_s)


_current: Heartbeat | None = None


@worker_init.connect
def _new_incarnation(**_: Any) -> None:
    # Before the pool forks, so that every child records it with the steps it starts.
    os.environ[INCARNATION_ENV] = uuid.uuid4().hex


@worker_ready.connect
def _start(sender: Any, **_: Any) -> None:
    global _current
    pool = getattr(getattr(sender, "controller", None), "concurrency", None)
    settings = Settings.from_env()
    _current = Heartbeat(sender.hostname, settings, pool)
    _current.start()
    check_eviction_policy(settings.redis_url, f"worker {sender.hostname}")


@worker_shutdown.connect
def _stop(**_: Any) -> None:
    if _current is not None:
        _current.stop()
