"""Prometheus metrics of one web process, in a registry of its own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


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
