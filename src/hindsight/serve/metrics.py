"""Prometheus metrics of one server (its own registry, so several servers can live in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    """What ``GET /metrics`` exposes: requests by route and status, tokens, queue, rows, passes, latency."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("hindsight_requests", "HTTP requests by route and status.", ["route", "status"],
                                registry=r)
        self.tokens_in = Counter("hindsight_prompt_tokens", "Prompt tokens of answered requests.", registry=r)
        self.tokens_out = Counter("hindsight_completion_tokens", "Completion tokens returned.", registry=r)
        self.queue_depth = Gauge("hindsight_queue_depth", "Requests waiting to start.", registry=r)
        self.active_rows = Gauge("hindsight_active_rows", "Rows decoding in the shared batch now.", registry=r)
        self.running_methods = Gauge("hindsight_running_methods", "best_of_n / smc / rain requests running.",
                                     registry=r)
        self.forward_passes = Counter("hindsight_forward_passes", "Model forward passes.", registry=r)
        self.latency = Histogram("hindsight_request_seconds", "Request latency by route.", ["route"], registry=r,
                                 buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300))

    def render(self) -> bytes:
        return generate_latest(self.registry)
