"""services/opsmantik/worker/metrics.py helpers."""

from __future__ import annotations


def test_observe_many_equals_observe_per_value() -> None:
    """services/opsmantik/worker/metrics.observe_many: the same buckets and sum as observe() per value,
    including values on a bucket's bound and past the last finite one."""
    from opsmantik.worker.metrics import observe_many
    from prometheus_client import CollectorRegistry, Histogram

    values = [0.0, 0.05, 0.051, 1.0, 3.3, 299.0, 300.0, 301.0, 1e9]
    one, many = (
        Histogram(f"h_{n}", "h", buckets=(0.05, 0.1, 1, 5, 300), registry=CollectorRegistry())
        for n in ("one", "many")
    )
    for v in values:
        one.observe(v)
    observe_many(many, values)
    samples = [
        [
            (s.name.split("_", 2)[-1], s.labels, s.value)
            for s in h.collect()[0].samples
            if not s.name.endswith("_created")
        ]
        for h in (one, many)
    ]
    assert samples[0] == samples[1]


def test_observe_many_with_counts_equals_observe_per_value() -> None:
    """observe_many(h, values, counts): values[i] observed counts[i] times (the worker's freshness,
    one value per request's received_at with its number of new rows)."""
    from opsmantik.worker.metrics import observe_many
    from prometheus_client import CollectorRegistry, Histogram

    values, counts = [0.0, 0.05, 0.051, 1.0, 299.0, 300.0, 1e9], [3, 1, 2, 100, 1, 7, 2]
    one, many = (
        Histogram(f"h_{n}", "h", buckets=(0.05, 0.1, 1, 5, 300), registry=CollectorRegistry())
        for n in ("one", "many")
    )
    for v, n in zip(values, counts, strict=True):
        for _ in range(n):
            one.observe(v)
    observe_many(many, values, counts)
    samples = [
        [
            (s.name.split("_", 2)[-1], s.labels, s.value)
            for s in h.collect()[0].samples
            if "created" not in s.name
        ]
        for h in (one, many)
    ]
    assert samples[0] == samples[1]
