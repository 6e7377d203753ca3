"""`opsmantik meters compact [--before TIME]`: minute buckets older than the acceptance window
merged into 15-minute buckets, exactly (docs/meters.md "Storage bound").

Every IANA offset in use is a whole number of quarter hours (+05:45, Lord_Howe's +10:30 included),
so HOUR, DAY and MONTH windows in any zone are unions of 15-minute buckets and answer the same
before and after; MINUTE windows over the compacted range are refused (query.py). The merge is
the worker's own (compact.sql): n and total add, lo/hi combine, latest keeps the later
(occurred_at, event_id), unique values are unioned. Idempotent: a merged bucket sits on its
quarter hour, and only buckets off the quarter hour are moved, so a second run moves nothing; a
minute bucket written later below the watermark (a lagging worker, a backfill) is merged by the
next run and meanwhile still answers every 15-minute-aligned window exactly. The hour and day
rollups (meters/rollup.py) are unchanged by construction: a minute moves into its quarter, within
its hour and day, and a rollup row is the merge of its buckets, whichever their width; the
minute rollups over every subject and group (width 1) of the merged range are deleted (not kept, nor
read, below the watermark).

Locking: the watermark is raised first (its own transaction), then each (meter, site, day) is
merged in one transaction holding the close lock shared and the worker's site lock, as a void
does (meters/voids.py): no batch or void of that site writes its buckets meanwhile, and a backfill
(close lock exclusive) excludes it. The worker waits at most one site-day's merge.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from opsmantik.db import site_locks
from opsmantik.db.queries import package_queries
from opsmantik.events import MAX_AGE

Q = package_queries("opsmantik.meters", "compact.sql")
QUARTER = timedelta(minutes=15)
CHUNK = timedelta(days=1)  # one transaction merges at most one site-day of one meter
EARLIEST = datetime(1, 1, 1, tzinfo=UTC)  # before any bucket: their times are Python's
# The acceptance window (docs/design.md): the gateway accepts an event at most 35 days old; the
# margin leaves a worker's lag and a clock's skew to land in minute buckets first.
ACCEPTANCE = MAX_AGE + timedelta(minutes=5)
MARGIN = timedelta(days=1)


@dataclass(frozen=True)
class Compacted:
    before: datetime  # the watermark: buckets before it may be 15-minute buckets
    pairs: int  # (meter, site) pairs merged
    quarter_buckets_written: int  # quarter rows inserted or updated by the merge
    unique_values_written: int


def quarter(t: datetime) -> datetime:
    """The start of t's UTC quarter hour (a multiple of 15 minutes since the epoch)."""
    return t - timedelta(minutes=t.minute % 15, seconds=t.second, microseconds=t.microsecond)


def default_before(now: datetime) -> datetime:
    return quarter(now - ACCEPTANCE - MARGIN)


async def watermark(conn: asyncpg.Connection) -> datetime | None:
    """Buckets before it may be 15-minute buckets (None: nothing was ever compacted)."""
    value: datetime | None = await conn.fetchval(Q["watermark"])
    return value


async def compact(conn: asyncpg.Connection, before: datetime) -> Compacted:
    """Merge every minute bucket before `before` (floored to a quarter hour) into its quarter."""
    before = quarter(before)
    async with conn.transaction():
        mark: datetime = await conn.fetchval(Q["raise_watermark"], before)
    pairs = await conn.fetch(Q["pairs"], mark)
    merged = uniques = 0
    for p in pairs:
        meter_id, site_id = p["meter_id"], p["site_id"]
        # From a day with buckets to the next one with any: the empty days between cost nothing.
        first: datetime | None = await conn.fetchval(Q["first_bucket"], meter_id, site_id, EARLIEST)
        while first is not None and (t := quarter(first)) < mark:
            end = min(t + CHUNK, mark)
            b, u = await merge(conn, meter_id, site_id, t, end)
            merged, uniques = merged + b, uniques + u
            first = await conn.fetchval(Q["first_bucket"], meter_id, site_id, end)
    return Compacted(mark, len(pairs), merged, uniques)


async def merge(
    conn: asyncpg.Connection, meter_id: uuid.UUID, site_id: uuid.UUID, lo: datetime, hi: datetime
) -> tuple[int, int]:
    """One transaction: the meter's minute buckets of the site in [lo, hi) moved into their
    quarters. Returns (quarter bucket rows written, unique values written)."""
    async with conn.transaction():
        await conn.execute(Q["close_lock_shared"])
        await site_locks.lock_sites(conn, [site_id])
        return await merge_locked(conn, meter_id, site_id, lo, hi)


async def merge_locked(
    conn: asyncpg.Connection, meter_id: uuid.UUID, site_id: uuid.UUID, lo: datetime, hi: datetime
) -> tuple[int, int]:
    """merge() for a caller already holding the close lock and the site's lock (a void)."""
    b = await conn.execute(Q["merge_buckets"], meter_id, site_id, lo, hi)
    await conn.execute(Q["drop_minute_rollups"], meter_id, site_id, lo, hi)
    u = await conn.execute(Q["merge_unique_values"], meter_id, site_id, lo, hi)
    return _count(b), _count(u)


def _count(status: str) -> int:
    """'INSERT 0 n' → n (the quarter rows written; moved rows are at least as many)."""
    return int(status.rsplit(" ", 1)[-1])
