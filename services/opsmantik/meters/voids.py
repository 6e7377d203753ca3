"""A void (`opsmantik events void`, billing/voids.py) applied to the meters, in its transaction.

The rule (docs/meters.md "Voids and late events"), the one `meters backfill` computes too
(aggregate.accumulate with Fact.voided_into):
- n and total (COUNT, SUM, AVG): the voided row stays in its billed month's bucket and the void
  is a negative entry (-1 event, -its value) in the bucket of the same minute, subject and groups
  of the month the void is booked in. So the meters filtered to a billing month equal its
  statement (rows billed in it minus voids booked in it), and over all billing months a voided
  event counts 0.
- lo, hi, latest (MIN, MAX, LATEST) and the unique values (UNIQUE_COUNT) are over the rows not
  voided: those of the voided row's (site, minute, billed month) are recomputed from the ledger.
- A meter that did not count the row (created after it, not backfilled: definitions.counted) is
  left alone.
Then the hour and day rollups of the two months in the voided row's hour and day are recomputed
from the buckets (meters/rollup.py), so every tier stays the merge of its minutes.
Below the compaction watermark (meters/compact.py) the bucket is the event's quarter hour: its
minute buckets written since the compaction are merged first, then the same rule applies to it.
The caller holds the close lock shared and the site lock (db/site_locks.py, the worker's) before
its first write, so no batch of the site writes these buckets meanwhile.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta

import asyncpg

from opsmantik.db.queries import package_queries
from opsmantik.meters import aggregate, compact, definitions, rollup
from opsmantik.meters.definitions import Meter

Q = package_queries("opsmantik.meters", "voids.sql")
ORDER_STATS = aggregate.ORDERED | {"UNIQUE_COUNT"}  # recomputed from the rows not voided


def _fact(r: asyncpg.Record) -> tuple[aggregate.Fact, datetime]:
    return aggregate.Fact(*list(r.values())[:9]), r["ledgered_at"]


async def apply_void(conn: asyncpg.Connection, site_id: uuid.UUID, event_id: str) -> None:
    """The void of (site_id, event_id), just inserted in billing_voids, applied to every meter."""
    row = await conn.fetchrow(Q["voided_fact"], site_id, event_id)
    if row is None:
        return  # not voided (the caller checked): nothing to apply
    voided, ledgered_at = _fact(row)
    assert voided.voided_into is not None  # the join with billing_voids
    meters = [m for m in await definitions.load(conn) if definitions.counted(m, ledgered_at)]
    if not meters:
        return
    at, width = aggregate.minute(voided.occurred_at), timedelta(minutes=1)
    mark = await compact.watermark(conn)
    if mark is not None and at < mark:  # a compacted range: the bucket is the quarter hour
        at, width = compact.quarter(at), compact.QUARTER
        for m in meters:
            await compact.merge_locked(conn, m.meter_id, site_id, at, at + width)
    # The negative entry in the booked month (the row itself stays in its billed month's n, total).
    entry = voided._replace(billing_month=voided.voided_into, voided_into=None)
    minus = aggregate.accumulate(meters, [entry], bucket_of=lambda _: at)
    for b in minus.buckets.values():
        b.n, b.total, b.lo, b.hi, b.latest = -b.n, -b.total, None, None, None
        b.uniques.clear()
    await aggregate.write(conn, minus)
    ordered = [m for m in meters if m.aggregation in ORDER_STATS]
    if ordered:
        await _recompute_order_stats(conn, ordered, site_id, at, width, voided.billing_month)
    months = sorted({voided.billing_month, voided.voided_into})
    ids = [m.meter_id for m in meters]
    await conn.execute(Q["drop_empty"], ids, site_id, at, months, width)
    # The hour and day rollups of both months' keys, recomputed from the buckets just changed.
    await rollup.refresh(conn, ids, site_id, at, at + width, months, minutes=mark is None or at >= mark)


async def _recompute_order_stats(
    conn: asyncpg.Connection,
    meters: list[Meter],
    site_id: uuid.UUID,
    at: datetime,
    width: timedelta,
    month: date,
) -> None:
    """lo, hi, latest and the unique values of the meters' buckets of (site, bucket [at, at +
    width), billed month), from the rows not voided that each meter counted."""
    rows = [_fact(r) for r in await conn.fetch(Q["live_facts"], site_id, at, month, width)]
    ids = [m.meter_id for m in meters]
    await conn.execute(Q["clear_order_stats"], ids, site_id, at, month, width)
    await conn.execute(Q["clear_uniques"], ids, site_id, at, month, width)
    inc = aggregate.Increments()
    for m in meters:
        aggregate.accumulate([m], [f for f, t in rows if definitions.counted(m, t)], inc, lambda _: at)
    keys = sorted(inc.buckets, key=lambda k: (k[0].bytes, k[4], k[5]))
    cols: list[list[object]] = [[] for _ in range(8)]
    for k in keys:
        b = inc.buckets[k]
        latest = b.latest or (None, None, None)
        row = (k[0], k[4], k[5], b.lo, b.hi, latest[2], latest[0], latest[1])
        for col, v in zip(cols, row, strict=True):
            col.append(v)
    if keys:
        await conn.execute(Q["set_order_stats"], *cols, site_id, at, month)
    uniq = aggregate.Increments()
    for k in keys:
        if inc.buckets[k].uniques:
            uniq.bucket(k).uniques = inc.buckets[k].uniques
    await aggregate.write(conn, uniq)  # unique values only: these buckets' n and total are 0
