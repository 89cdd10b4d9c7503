"""Every request is counted and timed in its own series, however many came before."""

from __future__ import annotations

import re
from typing import Any


def sample(text: str, name: str, labels: str) -> float:
    match = re.search(rf"^{re.escape(name + '{' + labels + '}')} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_each_request_adds_one_to_its_series(client: Any) -> None:
    for _ in range(3):
        client.get("/api/scenarios")
    client.get("/api/scenarios/nope")
    client.get("/api/scenarios/nope")
    text = client.get("/metrics").get_data(as_text=True)
    total = "stepstream_http_requests_total"
    assert sample(text, total, 'method="GET",route="/api/scenarios",status="200"') == 3
    assert (
        sample(text, total, 'method="GET",route="/api/scenarios/<scenario_id>",status="404"') == 2
    )
    timed = "stepstream_http_request_seconds_count"
    assert sample(text, timed, 'route="/api/scenarios"') == 3
    assert sample(text, timed, 'route="/api/scenarios/<scenario_id>"') == 2
