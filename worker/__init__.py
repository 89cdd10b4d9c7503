"""The Celery application: `celery -A worker worker` runs stepstream's steps."""

from . import heartbeat as heartbeat
from . import mcp_report as mcp_report
from . import shutdown as shutdown
from .celery_app import celery_config, create_celery_app

app = create_celery_app()

__all__ = ["app", "celery_config", "create_celery_app"]
