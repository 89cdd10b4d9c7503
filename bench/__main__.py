"""Run every benchmark against a stack of its own and print one JSON line per figure.

`python -m bench [PART ...] [--baseline PATH]`: the parts are `production`,
`in_process`, `mcp` and `streaming` (all when none is named), and `post_cpu` (alone;
`production` includes it). With `--baseline`, a
checkout of another commit, `post_cpu_ms` is measured for that commit's web too, in
the same run (`git worktree add --detach /tmp/base <commit>` makes one).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from .bare_worker import bare_worker
from .fanout import fanout_1000
from .latency import event_latency_1, mcp_step_latency, run_latency_3
from .production import latency, post_cpu, production_stack
from .production import throughput as production_throughput
from .stack import running_stack
from .streaming import run as streaming
from .throughput import throughput

#: The bare Celery baseline's Redis database: same server, never the same queue.
BARE_DB = 1
PARTS = ("production", "in_process", "mcp", "streaming", "post_cpu")


def emit(*figures: dict[str, Any]) -> None:
    for figure in figures:
        print(json.dumps(figure), flush=True)


def production(baseline: Path | None) -> None:
    with production_stack() as stack:
        with bare_worker(stack.env, stack.redis_url(BARE_DB), stack.log_dir) as bare:
            emit(*latency(stack, bare))
            emit(*production_throughput(stack, bare))
        emit(*post_cpu(stack, baseline))


def in_process() -> None:
    with running_stack() as stack:
        emit(run_latency_3(stack), event_latency_1(stack))
        with bare_worker(stack.env, stack.redis_url(BARE_DB), stack.log_dir) as bare:
            emit(*throughput(stack, bare))
        emit(*fanout_1000(stack))


def mcp() -> None:
    # One pool process: every MCP call goes through the one session the warm-up opened.
    with running_stack(concurrency=1, mcp=True) as stack:
        emit(*mcp_step_latency(stack))


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("parts", nargs="*", metavar="PART", help=", ".join(PARTS))
    parser.add_argument("--baseline", type=Path, help="a checkout to measure post_cpu_ms of")
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    parts = args.parts or [part for part in PARTS if part != "post_cpu"]
    unknown = set(parts) - set(PARTS)
    if unknown:
        parser.error(
            f"unknown part(s) {', '.join(sorted(unknown))}: choose from {', '.join(PARTS)}"
        )
    if "production" in parts:
        production(args.baseline)
    elif "post_cpu" in parts:
        with production_stack() as stack:
            emit(*post_cpu(stack, args.baseline))
    if "in_process" in parts:
        in_process()
    if "mcp" in parts:
        mcp()
    if "streaming" in parts:
        streaming(emit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
