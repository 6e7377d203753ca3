"""The gateway's request-path metrics as plain integers read at scrape time (gateway/metrics.py
RequestCounts, issue 28) against what prometheus_client's Counter and Histogram expose for the
same traffic: the same /metrics text, line for line, but for the `_created` timestamps' values."""

from __future__ import annotations

import random
import re

from opsmantik.gateway.metrics import LATENCY_BUCKETS, GatewayMetrics
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

ROUTES = ["/api/sync", "/api/v1/events", "/api/usage", "/metrics"]
CODES = [200, 200, 200, 400, 401, 413, 429, 503]
OUTCOMES = ["kafka", "outbox", "duplicate"]


class Reference:
    """The request-path metrics as gateway/metrics.py defined them before (prometheus children)."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "opsmantik_http_requests_total", "HTTP requests by route and code", ["route", "code"], registry=r
        )
        self.latency = Histogram(
            "opsmantik_http_request_duration_seconds",
            "HTTP latency by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.events = Counter(
            "opsmantik_gateway_events_total", "events answered in a 200, by outcome", ["outcome"], registry=r
        )
        self.breaker_state = Gauge(
            "opsmantik_gateway_breaker_state",
            "Kafka circuit breaker: 0 closed, 1 half-open, 2 open",
            registry=r,
        )


def _masked(text: bytes) -> list[str]:
    """The exposition with every _created sample's value replaced (wall-clock timestamps)."""
    return [re.sub(r"^(\S+_created(?:\{.*\})?) \S+$", r"\1 T", line) for line in text.decode().splitlines()]


def _traffic(seed: int) -> list[tuple[str, int, float, str, int]]:
    rng = random.Random(seed)
    latencies = [*LATENCY_BUCKETS, 0.0, 0.0049999, 0.0050001, 7.5, 1e-9]  # edges: a bucket's bound is in it
    return [
        (
            rng.choice(ROUTES),
            rng.choice(CODES),
            rng.choice(latencies) if rng.random() < 0.3 else rng.random() * 0.3,
            rng.choice(OUTCOMES),
            rng.randint(1, 1000),
        )
        for _ in range(2000)
    ]


def test_metrics_text_is_unchanged_for_the_same_traffic() -> None:
    for seed in range(5):
        ours, ref = GatewayMetrics(), Reference()
        for route, status, seconds, outcome, n in _traffic(seed):
            ours.request_done(route, status, seconds)
            ref.requests.labels(route, str(status)).inc()
            ref.latency.labels(route).observe(seconds)
            ours.events_done(outcome, n)
            ref.events.labels(outcome).inc(n)
        ours_lines = [ln for ln in _masked(generate_latest(ours.registry)) if "breaker_state" not in ln]
        ref_lines = [ln for ln in _masked(generate_latest(ref.registry)) if "breaker_state" not in ln]
        assert ours_lines[: len(ref_lines)] == ref_lines  # same names, labels, values and order
        assert ours_lines[len(ref_lines)].startswith("# HELP opsmantik_gateway_breaker_trips")


def test_nothing_counted_exposes_what_the_counters_did() -> None:
    ours, ref = GatewayMetrics(), Reference()
    ours_lines = _masked(generate_latest(ours.registry))
    ref_lines = [ln for ln in _masked(generate_latest(ref.registry)) if "breaker_state" not in ln]
    assert ours_lines[: len(ref_lines)] == ref_lines
