"""Prometheus metrics of one web process, in a registry of its own.

`/metrics` is open, so every label value comes from a fixed set (SPEC §14): whatever
a client sends (an invented method, a path no route has, a status no answer uses)
cannot add a series.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

#: The methods that are labelled as themselves; any other is `other`.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: The route label of a request no route matched (404, 405, a refused upgrade).
UNMATCHED = "unmatched"
OTHER = "other"


def method_label(method: str) -> str:
    return method if method in METHODS else OTHER


def route_label(rule: str | None) -> str:
    """A route's rule (`/api/runs/<run_id>`, one of the app's own), never the path."""
    return rule if rule is not None else UNMATCHED


def status_label(status: int) -> str:
    return str(status) if 100 <= status <= 599 else OTHER


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "stepstream_http_requests_total",
            "HTTP requests by route and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "stepstream_http_request_seconds",
            "Time to answer a (non-streaming) HTTP request.",
            ["route"],
            registry=self.registry,
        )
        self.runs_submitted = Counter(
            "stepstream_runs_submitted_total",
            "Runs accepted by POST /api/runs.",
            ["scenario_id"],
            registry=self.registry,
        )
        self.subscribers = Gauge(
            "stepstream_stream_subscribers",
            "Clients following a run's events right now.",
            ["transport"],
            registry=self.registry,
        )
        self.events_sent = Counter(
            "stepstream_stream_events_sent_total",
            "Events delivered to streaming clients.",
            ["transport"],
            registry=self.registry,
        )
        self.dropped = Counter(
            "stepstream_stream_dropped_total",
            "Streaming clients cut off before run_finished (slow, unavailable, shutdown).",
            ["transport", "reason"],
            registry=self.registry,
        )
