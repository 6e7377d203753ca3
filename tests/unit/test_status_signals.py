"""Reading signals (services/opsmantik/status/signals.py): the sliding counter window and the usage-route
counts from the gateway's Prometheus registry, and the DB reading turned into Signals."""

from datetime import UTC, datetime, timedelta

from opsmantik.gateway.metrics import GatewayMetrics
from opsmantik.status.signals import CounterWindow, DbReading, to_signals, usage_counts

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def test_counter_window_gives_deltas_over_the_window():
    w = CounterWindow(window_s=300)
    assert w.add(0, 10, 1) == (0, 0)  # the first sample is the base
    assert w.add(100, 30, 2) == (20, 1)
    assert w.add(299, 40, 2) == (30, 1)  # still within 300 s of the first
    assert w.add(400, 50, 2) == (20, 0)  # the first sample slid out; base is t=100
    assert w.add(401, 5, 0) == (0, 0)  # a restarted counter never goes negative


def test_usage_counts_read_only_the_usage_routes():
    m = GatewayMetrics()
    for route, status, n in (
        ("/api/usage", 200, 7),
        ("/api/usage", 503, 2),
        ("/api/billing/dispute-export", 500, 1),
        ("/api/sync", 503, 100),
    ):
        for _ in range(n):
            m.request_done(route, status, 0.01)
    assert usage_counts(m.registry.collect) == (10, 3)


def test_db_reading_to_signals():
    reading = DbReading(
        sync={"requests": 100, "errors_5xx": 1, "within_500ms": 99, "captured": 500},
        fresh={"events": 400, "lag_max_ms": 1200.0, "last_minute": NOW - timedelta(minutes=3)},
        outbox={"pending": 3, "oldest": NOW - timedelta(seconds=42), "parked": 0},
        maintenance=[{"starts_at": NOW - timedelta(minutes=1), "ends_at": NOW + timedelta(hours=1)}],
    )
    s = to_signals(NOW, True, "closed", reading, (5, 0))  # type: ignore[arg-type]
    assert s.db_reachable and s.sync_requests == 100 and s.captured_events == 500
    assert s.outbox_oldest_age_s == 42 and s.last_ledgered_age_s == 120  # minute start + 60 s
    assert s.maintenance_active and s.usage_requests == 5
    ended = DbReading(
        reading.sync, reading.fresh, reading.outbox, [{"starts_at": NOW - timedelta(hours=2), "ends_at": NOW}]
    )
    assert not to_signals(NOW, True, "closed", ended, (0, 0)).maintenance_active  # type: ignore[arg-type]
    down = to_signals(NOW, False, "open", None, (0, 0))
    assert not down.db_reachable and not down.broker_reachable
