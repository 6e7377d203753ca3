"""Every gateway metric, named opsmantik_…, in one registry per app (tests build several apps)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


@dataclass
class GatewayMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
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
        self.breaker_trips = Counter(
            "opsmantik_gateway_breaker_trips_total", "times the breaker opened", registry=r
        )
        self.queue_depth = Gauge(
            "opsmantik_gateway_producer_queue_depth",
            "messages in librdkafka's queue awaiting delivery",
            registry=r,
        )
        self.key_cache = Gauge("opsmantik_gateway_key_cache_keys", "known keys cached", registry=r)
        self.usage_age = Gauge(
            "opsmantik_gateway_usage_cache_age_seconds",
            "age of the usage cache (-1: never loaded)",
            registry=r,
        )
        self.slo_flush_failures = Counter(
            "opsmantik_gateway_slo_flush_failures_total",
            "failed slo_requests flushes (counts kept for the next try)",
            registry=r,
        )
        self.auth_refusals = Counter(
            "opsmantik_gateway_auth_refused_total",
            "requests refused before any work, by reason: malformed, bad_mac, legacy_disabled, "
            "unknown (looked up), unknown_cached, lookup_budget (429, no lookup), lookup_failed (429)",
            ["reason"],
            registry=r,
        )
        # labels() takes a lock and builds a key per call: the request path uses these caches
        # of the children instead (a handful of routes, codes and outcomes).
        self._request_children: dict[tuple[str, int], tuple[object, object]] = {}
        self._event_children: dict[str, object] = {}
        self._refusal_children: dict[str, object] = {}

    def request_done(self, route: str, status: int, seconds: float) -> None:
        """requests{route, code} += 1 and latency{route}.observe(seconds)."""
        pair = self._request_children.get((route, status))
        if pair is None:
            pair = self._request_children[(route, status)] = (
                self.requests.labels(route, str(status)),
                self.latency.labels(route),
            )
        pair[0].inc()  # type: ignore[attr-defined]
        pair[1].observe(seconds)  # type: ignore[attr-defined]

    def events_done(self, outcome: str, n: int) -> None:
        child = self._event_children.get(outcome)
        if child is None:
            child = self._event_children[outcome] = self.events.labels(outcome)
        child.inc(n)  # type: ignore[attr-defined]

    def auth_refused(self, reason: str) -> None:
        child = self._refusal_children.get(reason)
        if child is None:
            child = self._refusal_children[reason] = self.auth_refusals.labels(reason)
        child.inc()  # type: ignore[attr-defined]
