"""SloRollup.record's request path (services/opsmantik/gateway/rollup.py): the cached minute follows the
clock and a flush's swap of `minutes`, so no request is counted into a dict already taken."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import pytest
from opsmantik.gateway import rollup
from opsmantik.gateway.rollup import SloRollup

T0 = datetime(2026, 11, 28, 10, 15, 30, tzinfo=UTC).timestamp()


def test_requests_land_in_their_minute(monkeypatch: pytest.MonkeyPatch) -> None:
    r = SloRollup(instance="t")
    now = [T0]
    monkeypatch.setattr(rollup.time, "time", lambda: now[0])
    r.record(200, 0.01)
    r.record(503, 0.01)
    now[0] = T0 + 40  # 10:16:10
    r.record(429, 0.7)
    a, b = datetime(2026, 11, 28, 10, 15, tzinfo=UTC), datetime(2026, 11, 28, 10, 16, tzinfo=UTC)
    m = r.minutes
    assert sorted(m.rows) == [a, b]
    assert (m.get(a, "requests"), m.get(a, "errors_5xx")) == (2, 1)
    assert (m.get(b, "requests"), m.get(b, "rate_limited"), m.get(b, "within_500ms")) == (1, 1, 0)


def test_a_flush_swap_starts_a_fresh_minute(monkeypatch: pytest.MonkeyPatch) -> None:
    r = SloRollup(instance="t")
    monkeypatch.setattr(rollup.time, "time", lambda: T0)
    r.record(200, 0.01)
    taken = r.minutes.take()  # what flush() does first
    r.record(200, 0.01, Counter(accepted=2))
    minute = datetime(2026, 11, 28, 10, 15, tzinfo=UTC)
    assert taken[minute][0] == 1 and r.minutes.get(minute, "requests") == 1
    assert r.minutes.get(minute, "accepted") == 2


def test_a_failed_flush_adds_its_counts_back() -> None:
    r = SloRollup(instance="t")
    minute = datetime(2026, 11, 28, 10, 15, tzinfo=UTC)
    r.record(200, 0.01, Counter(accepted=1), now=minute)
    taken = r.minutes.take()
    r.record(503, 0.01, now=minute)
    r.minutes.restore(taken)
    assert (r.minutes.get(minute, "requests"), r.minutes.get(minute, "errors_5xx")) == (2, 1)
    assert r.minutes.get(minute, "accepted") == 1


def test_the_sla_rollup_counts_a_request_in_its_minute_with_the_real_clock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SlaRollup.minute() reads time.time() (a datetime once a minute): the same minute a
    datetime.now(UTC) clock gives, the bucket key the flush writes."""
    import uuid

    from opsmantik.gateway import sla_rollup
    from opsmantik.gateway.sla_rollup import SlaRollup

    r = SlaRollup()
    site = uuid.uuid4()
    now = [T0]
    monkeypatch.setattr(sla_rollup.time, "time", lambda: now[0])
    r.record(site, 200)
    now[0] = T0 + 29.999  # 10:15:59.999
    r.record(site, 503)
    now[0] = T0 + 30  # 10:16:00
    r.record(site, 429, "quota_exceeded")
    a, b = datetime(2026, 11, 28, 10, 15, tzinfo=UTC), datetime(2026, 11, 28, 10, 16, tzinfo=UTC)
    assert sorted(r.buckets.rows) == [(site, a), (site, b)]
    assert r.buckets.rows[(site, a)][:4] == [2, 1, 1, 1]  # received, persisted, 5xx, 503
    assert r.buckets.get((site, b), "quota_exceeded") == 1
    now[0] = datetime.now(UTC).timestamp()
    assert r.minute() == datetime.fromtimestamp(now[0], UTC).replace(second=0, microsecond=0)
    moved = SlaRollup(clock=lambda: datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC))  # a test's clock
    assert moved.minute() == datetime(2026, 1, 2, 3, 4, tzinfo=UTC)
