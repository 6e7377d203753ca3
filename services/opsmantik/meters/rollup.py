"""The meters' hour and day tiers (docs/meters.md "Tiers"; migration 0017).

meter_rollups holds, per meter, site, UTC hour (width 60) or UTC day (width 1440), billing month,
subject and groups, the merge of the meter_buckets rows of that key in the hour or day;
meter_rollup_values the union of their distinct values (UNIQUE_COUNT). A rollup row exists iff at
least one bucket row of its key exists in its range. They are kept exact by construction:
- the worker (and `meters backfill`) writes them in the statement that writes the minute buckets
  (aggregate.sql add_buckets, add_unique_values), with the same merge;
- a void recomputes the rollups of the voided row's hour and day from the buckets (refresh, here),
  after its own changes to them (meters/voids.py);
- compaction moves minute buckets into their quarter hour, within the hour: no rollup changes;
- a meter's deletion cascades; `meters backfill` clears them with the buckets.
A query (meters/query.py) reads a window as the coarsest aligned pieces: minute buckets up to the
first UTC hour, hours up to the first UTC day, days, then hours and minutes again. That holds for
every zone: a window of Asia/Kolkata starting 18:30 UTC reads 30 minutes, then hours and days.

Width 1 (meter_rollups only, not UNIQUE_COUNT's values): a minute's buckets merged over every subject
and group (subject '', groups '{}'), written by the same statement. A minute piece of a query that
neither filters nor groups by subject or group reads it (one row a minute, not one per key) at and
after the compaction watermark; below it they are not kept (compaction deletes them with the
minutes it merges: a void there could not recompute a minute from its quarter), and not read.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta

import asyncpg

from opsmantik.db.queries import package_queries

Q = package_queries("opsmantik.meters", "rollup.sql")
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)  # date_bin's origin in the SQL: a UTC midnight
HOUR, DAY = timedelta(hours=1), timedelta(days=1)
WIDTHS = {1: timedelta(minutes=1), 60: HOUR, 1440: DAY}  # in minutes; 0: the buckets themselves


def floor(t: datetime, step: timedelta) -> datetime:
    return t - (t - EPOCH) % step


def ceil(t: datetime, step: timedelta) -> datetime:
    f = floor(t, step)
    return f if f == t else f + step


def pieces(start: datetime, end: datetime) -> list[tuple[int, datetime, datetime]]:
    """[start, end) as (width, from, to) pieces, coarsest first where aligned: width 0 reads the
    minute (or quarter) buckets in [from, to), 60 the hour rollups starting there, 1440 the day
    rollups. At most 5 pieces: minutes, hours, days, hours, minutes."""
    h1, h2 = ceil(start, HOUR), floor(end, HOUR)
    if h1 >= h2:
        return [(0, start, end)]
    out: list[tuple[int, datetime, datetime]] = []
    if start < h1:
        out.append((0, start, h1))
    d1, d2 = ceil(h1, DAY), floor(h2, DAY)
    if d1 < d2:
        if h1 < d1:
            out.append((60, h1, d1))
        out.append((1440, d1, d2))
        if d2 < h2:
            out.append((60, d2, h2))
    else:
        out.append((60, h1, h2))
    if h2 < end:
        out.append((0, h2, end))
    return out


async def refresh(
    conn: asyncpg.Connection,
    meter_ids: Sequence[uuid.UUID],
    site_id: uuid.UUID,
    lo: datetime,
    hi: datetime,
    months: Sequence[date] | None = None,
    minutes: bool = True,
) -> None:
    """The rollups of the meters, the site and `months` (None: all) covering [lo, hi), recomputed
    from the buckets: the minutes over every subject and group (width 1; `minutes` False below the
    compaction watermark, where they are not kept: only cleared), the hours from the minutes, then
    the days from the hours. The caller holds what keeps the site's buckets still (a void: the site
    lock)."""
    ids, ms = list(meter_ids), (list(months) if months is not None else None)
    await conn.execute(Q["clear_minutes"], ids, site_id, lo, hi, ms)
    if minutes:
        await conn.execute(Q["fill_minutes"], ids, site_id, lo, hi, ms)
    h0, h1 = floor(lo, HOUR), ceil(hi, HOUR)
    d0, d1 = floor(lo, DAY), ceil(hi, DAY)
    for clear, fill, a, b in (
        ("clear_hours", "fill_hours", h0, h1),
        ("clear_days", "fill_days", d0, d1),
        ("clear_hour_values", "fill_hour_values", h0, h1),
        ("clear_day_values", "fill_day_values", d0, d1),
    ):
        await conn.execute(Q[clear], ids, site_id, a, b, ms)
        await conn.execute(Q[fill], ids, site_id, a, b, ms)


async def clear_meter(conn: asyncpg.Connection, meter_id: uuid.UUID) -> None:
    await conn.execute(Q["clear_meter"], meter_id)
    await conn.execute(Q["clear_meter_values"], meter_id)
