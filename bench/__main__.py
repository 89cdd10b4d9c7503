"""Run every benchmark against a stack of its own and print one JSON line per figure."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from .bare_worker import bare_worker
from .fanout import fanout_1000
from .hops import celery_hop_latency
from .latency import event_latency_1, mcp_step_latency, run_latency_3
from .stack import running_stack
from .streaming import run as streaming
from .throughput import throughput

#: The bare Celery baseline's Redis database: same server, never the same queue.
BARE_DB = 1


def emit(*figures: dict[str, Any]) -> None:
    for figure in figures:
        print(json.dumps(figure), flush=True)


def main() -> int:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    with running_stack() as stack:
        emit(run_latency_3(stack), event_latency_1(stack))
        with bare_worker(stack.env, stack.redis_url(BARE_DB), stack.log_dir) as bare:
            emit(*throughput(stack, bare), celery_hop_latency(bare))
        emit(*fanout_1000(stack))
    # One pool process: every MCP call goes through the one session the warm-up opened.
    with running_stack(concurrency=1, mcp=True) as stack:
        emit(*mcp_step_latency(stack))
    streaming(emit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
