"""Imported at start by any Python process with this directory on PYTHONPATH: shifts
its wall clock (`time.time` and what derives from it) by STEPSTREAM_TEST_CLOCK_OFFSET_S
seconds, as a host whose clock is off would be. Monotonic clocks are left alone."""

import os
import time

_offset = float(os.environ.get("STEPSTREAM_TEST_CLOCK_OFFSET_S", "0") or 0)
if _offset:
    _real_time, _real_time_ns = time.time, time.time_ns
    time.time = lambda: _real_time() + _offset
    time.time_ns = lambda: _real_time_ns() + int(_offset * 1e9)
