"""Every gateway metric, named opsmantik_…, in one registry per app (tests build several apps).

The three the request path adds to (requests by route and code, latency by route, events by
outcome) are plain integers in dicts (`RequestCounts`), turned into metric families only when
/metrics is scraped: prometheus_client's children take a lock per inc/observe, two or three a
request on the hottest path (issue 28). The exposition is what the Counter and Histogram gave:
the same names, labels, samples (`_total`, `_created`, cumulative `_bucket`s, `_count`, `_sum`)
and order (tests/unit/test_gateway_metrics.py compares the two for the same traffic).
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_BOUNDS = (*LATENCY_BUCKETS, float("inf"))
_LE = tuple(floatToGoString(b) for b in _BOUNDS)  # type: ignore[no-untyped-call]


class RequestCounts(Collector):
    """opsmantik_http_requests_total{route,code}, opsmantik_http_request_duration_seconds{route}
    and opsmantik_gateway_events_total{outcome}: added to without locks (one event loop), read at
    scrape time. `created` is when a label set was first counted, as the Counter's child had it."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str], int] = {}
        self.requests_created: dict[tuple[str, str], float] = {}
        # per route: a count per bucket (not cumulative; the last is +Inf), then the sum
        self.latency: dict[str, list[int]] = {}
        self.latency_sum: dict[str, float] = {}
        self.latency_created: dict[str, float] = {}
        self.events: dict[str, int] = {}
        self.events_created: dict[str, float] = {}

    def request(self, route: str, code: str, seconds: float) -> None:
        key = (route, code)
        n = self.requests.get(key)
        if n is None:
            n = 0
            self.requests_created[key] = time.time()
            if route not in self.latency:
                self.latency[route] = [0] * len(_BOUNDS)
                self.latency_sum[route] = 0.0
                self.latency_created[route] = time.time()
        self.requests[key] = n + 1
        self.latency[route][bisect_left(_BOUNDS, seconds)] += 1  # the Histogram's bucket rule
        self.latency_sum[route] += seconds

    def add_events(self, outcome: str, n: int) -> None:
        if outcome not in self.events:
            self.events[outcome] = 0
            self.events_created[outcome] = time.time()
        self.events[outcome] += n

    def collect(self) -> Iterator[Metric]:
        req = Metric("opsmantik_http_requests", "HTTP requests by route and code", "counter")
        for (route, code), n in list(self.requests.items()):
            labels = {"route": route, "code": code}
            req.add_sample("opsmantik_http_requests_total", labels, float(n))
            req.add_sample("opsmantik_http_requests_created", labels, self.requests_created[(route, code)])
        yield req
        lat = Metric("opsmantik_http_request_duration_seconds", "HTTP latency by route", "histogram")
        name = "opsmantik_http_request_duration_seconds"
        for route, counts in list(self.latency.items()):
            total = 0
            for le, c in zip(_LE, counts, strict=True):
                total += c
                lat.add_sample(f"{name}_bucket", {"route": route, "le": le}, float(total))
            lat.add_sample(f"{name}_count", {"route": route}, float(total))
            lat.add_sample(f"{name}_sum", {"route": route}, self.latency_sum[route])
            lat.add_sample(f"{name}_created", {"route": route}, self.latency_created[route])
        yield lat
        ev = Metric("opsmantik_gateway_events", "events answered in a 200, by outcome", "counter")
        for outcome, n in list(self.events.items()):
            ev.add_sample("opsmantik_gateway_events_total", {"outcome": outcome}, float(n))
            ev.add_sample(
                "opsmantik_gateway_events_created", {"outcome": outcome}, self.events_created[outcome]
            )
        yield ev

    def describe(self) -> Iterator[Metric]:
        # the names, so the registry refuses a duplicate as it did with the Counter/Histogram
        yield Metric("opsmantik_http_requests", "HTTP requests by route and code", "counter")
        yield Metric("opsmantik_http_request_duration_seconds", "HTTP latency by route", "histogram")
        yield Metric("opsmantik_gateway_events", "events answered in a 200, by outcome", "counter")


@dataclass
class GatewayMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.counts = RequestCounts()
        r.register(self.counts)  # first, where the Counter and Histogram were: the same order
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
        # labels() takes a lock and builds a key per call: refusals use this cache of the children.
        self._refusal_children: dict[str, object] = {}
        self._codes: dict[int, str] = {}

    def request_done(self, route: str, status: int, seconds: float) -> None:
        """requests{route, code} += 1 and latency{route}.observe(seconds)."""
        code = self._codes.get(status)
        if code is None:
            code = self._codes[status] = str(status)
        self.counts.request(route, code, seconds)

    def events_done(self, outcome: str, n: int) -> None:
        self.counts.add_events(outcome, n)

    def auth_refused(self, reason: str) -> None:
        child = self._refusal_children.get(reason)
        if child is None:
            child = self._refusal_children[reason] = self.auth_refusals.labels(reason)
        child.inc()  # type: ignore[attr-defined]
