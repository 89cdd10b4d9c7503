"""The Celery application and the settings that make steps safe to run on it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery import Celery

from tasks.config import Settings

from .transport import TRANSPORT


def celery_config(settings: Settings) -> dict[str, Any]:
    # A message a lost node had taken comes back after the visibility timeout. The
    # sweeper resumes such a node's running steps long before; this is the backstop
    # for the rest (a step it had recorded as finished but not yet dispatched from, a
    # retry it held for its countdown). A copy of a message whose execution is still
    # running is harmless: it finds its attempt taken and does nothing.
    redeliver_s = max(1.0, settings.redeliver_s)
    transport_options = {
        "visibility_timeout": redeliver_s,
        # kombu looks for such messages every interval x throttle seconds.
        "unacked_restore_interval": max(1.0, min(10.0, redeliver_s / 4)),
        "unacked_restore_throttle": 1,
    }
    redis_broker = settings.broker_url.startswith(("redis://", "rediss://"))
    return {
        "broker_url": settings.broker_url,
        **({"broker_transport": TRANSPORT} if redis_broker else {}),
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": transport_options,
        # A publish to a dead broker must fail fast so the API can answer 503.
        "broker_connection_timeout": 2,
        "task_publish_retry_policy": {
            "max_retries": 2,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.5,
        },
        "task_ignore_result": True,
        "result_backend": None,
        "task_serializer": "json",
        "accept_content": ["json"],
        # A step acknowledges its message only once recorded, and a worker that dies
        # mid-step gets its message redelivered: the scripts' fencing makes that safe.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        # Flower shows every run and step task.
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "include": ["tasks.runner"],
    }


def create_celery_app(
    settings: Settings | None = None,
    *,
    name: str = "stepstream",
    config: Callable[[Settings], dict[str, Any]] = celery_config,
) -> Celery:
    """A Celery app; without settings, they are read from the environment when first used."""
    app = Celery(name)
    if settings is not None:
        app.conf.update(config(settings))
    else:
        app.add_defaults(lambda: config(Settings.from_env()))
    return app
