"""Sending `stepstream.run_step` tasks: the one way steps reach the workers.

Workers send the steps a step's end made ready (`steps.dispatch`); the web sends the
roots of the runs it creates, one run or a batch of them. Either way every message goes
through one producer in one batch: a pipelined round trip per batch rather than one per
message, so a fan-out to a thousand steps, or a thousand new runs, is a handful of
writes. This module imports nothing of the worker's execution, so the web can use it.
"""

from __future__ import annotations

from collections.abc import Iterable

from celery import Celery
from kombu.exceptions import BatchPublishError, OperationalError

from tasks.config import HARD_LIMIT_GRACE_S
from tasks.run_records import ReadyStep
from tasks.task_names import RUN_STEP

#: The longest retry countdown sent (the scripts cap it too): a later ETA would overflow
#: Celery's date arithmetic or sit in a worker's memory for days.
MAX_COUNTDOWN_S = 3600.0


def task_label(run_id: str, scenario_id: str, step: str, attempt: int) -> str:
    """What Flower shows as a `run_step` task's kwargs (Celery's `kwargsrepr`; the task
    takes none): a dict literal, so that Flower's search finds `kwargs:step=fetch`,
    `kwargs:run_id=<id>` or `kwargs:scenario_id=<id>`."""
    return repr({"run_id": run_id, "scenario_id": scenario_id, "step": step, "attempt": attempt})


def publish_steps(app: Celery, sends: Iterable[tuple[str, str, ReadyStep]]) -> None:
    """Send a `run_step` message for each (run_id, scenario_id, ready step), in one
    producer batch. Raises what the broker raised; a batch cut short may have sent part
    of its messages, which is harmless: starting an attempt is fenced. A batch whose
    flush failed is kombu's `BatchPublishError` (delivery uncertain): raised as the
    connection error it is, so that callers treat it as a broker that did not answer."""
    try:
        with app.producer_or_acquire() as producer, producer.batch():
            for run_id, scenario_id, item in sends:
                app.send_task(
                    RUN_STEP,
                    args=(run_id, item.step, item.attempt),
                    kwargsrepr=task_label(run_id, scenario_id, item.step, item.attempt),
                    countdown=min(item.delay_s, MAX_COUNTDOWN_S) or None,
                    soft_time_limit=item.timeout_s,
                    time_limit=item.timeout_s + HARD_LIMIT_GRACE_S,
                    producer=producer,
                )
    except BatchPublishError as exc:
        raise OperationalError(f"{exc}: {exc.__cause__ or exc.__context__}") from exc
