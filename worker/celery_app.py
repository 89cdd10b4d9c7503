"""The Celery application and the settings that make steps safe to run on it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery import Celery

from tasks import redis_client
from tasks.config import Settings

from .transport import TRANSPORT

#: How long kombu's consumer blocks in BRPOP on the broker (kombu's default, stated
#: here so that the read timeout can be held against it).
BRPOP_S = 1.0
#: A broker reply later than this means the broker is not answering: a publish fails
#: (and the API answers 503) instead of hanging. It must stay longer than BRPOP_S:
#: a consumer's BRPOP is answered only when its block ends.
BROKER_READ_TIMEOUT_S = max(redis_client.READ_TIMEOUT_S, 2 * BRPOP_S)
#: kombu drops a BRPOP connection whose reply is this much overdue (a half-open
#: connection the event loop would otherwise wait on for ever), and redis-py checks
#: connections idle this long before using them.
BROKER_HEALTH_CHECK_S = 10


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
        "polling_interval": BRPOP_S,
        # Without a read timeout (kombu's default) a publish to a broker that accepts
        # and never answers waits for ever, in the web and in a task alike.
        "socket_timeout": BROKER_READ_TIMEOUT_S,
        "socket_connect_timeout": redis_client.CONNECT_TIMEOUT_S,
        "socket_keepalive": True,
        "health_check_interval": BROKER_HEALTH_CHECK_S,
    }
    redis_broker = settings.broker_url.startswith(("redis://", "rediss://"))
    return {
        "broker_url": settings.broker_url,
        **({"broker_transport": TRANSPORT} if redis_broker else {}),
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": transport_options,
        # A publish to a dead broker must fail fast so the API can answer 503.
        "broker_connection_timeout": 2,
        # No retry: each retry costs kombu a reconnection and a read timeout more, and
        # a connection the broker closed is already replaced when it leaves the pool.
        # A broker that does not answer is a 503 after one read timeout.
        "task_publish_retry_policy": {
            "max_retries": 0,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.5,
        },
        # Its own queue, not Celery's shared default `celery`: a worker started with
        # no -Q consumes it.
        "task_default_queue": settings.queue,
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
        "include": ["worker.steps"],
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
