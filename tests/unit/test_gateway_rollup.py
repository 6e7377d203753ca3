"""SloRollup.record's request path (services/opsmantik/gateway/rollup.py): the cached minute follows the
clock and a flush's swap of `minutes`, so no request is counted into a dict already taken."""

from __future__ import annotations

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
    assert sorted(r.minutes) == [a, b]
    assert (r.minutes[a].requests, r.minutes[a].errors_5xx) == (2, 1)
    assert (r.minutes[b].requests, r.minutes[b].rate_limited, r.minutes[b].within_500ms) == (1, 1, 0)


def test_a_flush_swap_starts_a_fresh_minute(monkeypatch: pytest.MonkeyPatch) -> None:
    r = SloRollup(instance="t")
    monkeypatch.setattr(rollup.time, "time", lambda: T0)
    r.record(200, 0.01)
    taken, r.minutes = r.minutes, {}  # what flush() does first
    r.record(200, 0.01)
    minute = datetime(2026, 11, 28, 10, 15, tzinfo=UTC)
    assert taken[minute].requests == 1 and r.minutes[minute].requests == 1
