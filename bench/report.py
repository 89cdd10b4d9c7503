"""How a figure is printed (SPEC §1): one JSON object with name, value, unit, setup."""

from __future__ import annotations

import statistics
from typing import Any


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {"p50": round(statistics.median(ordered), 2), "p99": round(p99, 2)}


def figure(name: str, value: Any, unit: str, setup: str) -> dict[str, Any]:
    return {"name": name, "value": value, "unit": unit, "setup": setup}
