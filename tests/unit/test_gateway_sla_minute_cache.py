"""SlaRollup.record's per-minute cache of each site's counts (gateway/sla_rollup.py, issue 28)
counts exactly what the uncached path counts: the same (site, minute) rows, through minute
changes, flush swaps (`take`) and failed flushes (`restore`)."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime

import pytest
from opsmantik.gateway import sla_rollup
from opsmantik.gateway.sla_rollup import SlaRollup

T0 = datetime(2026, 12, 7, 10, 15, 30, tzinfo=UTC).timestamp()
STATUSES = (200, 200, 200, 204, 400, 401, 413, 415, 429, 429, 500, 503)


def test_the_cached_path_counts_as_the_uncached_path(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(28)
    now = [T0]
    monkeypatch.setattr(sla_rollup.time, "time", lambda: now[0])
    cached = SlaRollup()  # the real clock: the request path's cache
    plain = SlaRollup(clock=lambda: datetime.fromtimestamp(now[0], UTC))  # a row looked up per call
    sites = [uuid.uuid4() for _ in range(5)]
    flushed: list[tuple[dict[object, list[int]], dict[object, list[int]]]] = []
    for step in range(5_000):
        now[0] += rng.choice((0.0, 0.001, 0.5, 7.0, 29.999))
        status = rng.choice(STATUSES)
        limit = rng.choice(("rate_limited", "quota_exceeded")) if status == 429 else None
        site = rng.choice(sites)
        cached.record(site, status, limit)
        plain.record(site, status, limit)
        if step % 97 == 0:  # a flush: rows swapped out
            taken = cached.buckets.take(), plain.buckets.take()
            if step % 2:  # its write failed: counts added back
                cached.buckets.restore(taken[0])
                plain.buckets.restore(taken[1])
            else:
                flushed.append(taken)
    assert cached.buckets.rows == plain.buckets.rows
    assert [a for a, _ in flushed] == [b for _, b in flushed]
    assert (
        sum(c[0] for a, _ in flushed for c in a.values()) + sum(c[0] for c in cached.buckets.rows.values())
        == 5_000
    )
