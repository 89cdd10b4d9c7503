"""Run every benchmark against a stack of its own and print one JSON line per figure."""

from __future__ import annotations

import json
import logging
import sys

from .figures import event_latency_1, run_latency_3
from .stack import running_stack


def main() -> int:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    with running_stack() as stack:
        for measure in (run_latency_3, event_latency_1):
            print(json.dumps(measure(stack)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
