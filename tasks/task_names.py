"""The names of stepstream's Celery tasks, which the web sends and the workers run
(`worker/steps.py`): the domain names them here without importing Celery."""

from __future__ import annotations

RUN_SCENARIO = "stepstream.run_scenario"
RUN_STEP = "stepstream.run_step"
ENFORCE_CANCEL = "stepstream.enforce_cancel"
