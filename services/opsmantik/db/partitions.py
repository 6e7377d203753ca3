"""The ledger's month partitions: which months an event may still arrive in, and creating them.

The gateway accepts an event only when its occurred_at lies in [received_at - 35 days,
received_at + 5 min] (opsmantik.events.MAX_AGE / MAX_AHEAD). So:

- new ledger rows land only in the months that window touches: at most three (35 days back
  never reaches past the previous month but one; 5 minutes ahead at most into the next month);
- the dedupe scope of a copy received at R and ledgered at `now` (now >= R) is every month from
  month(R - 35 days) to month(now + 5 min) (`dedupe_months`). An earlier copy of the same
  event_id was received before now, so its month is <= month(now + 5 min); if it is older than
  month(R - 35 days) the gateway would have refused that copy when this one arrived: it is
  another event that reused the id, not a retry. A retry with the same occurred_at always lands
  in the same month and is caught by the partition's primary key, whatever its age.
  When the worker is current (now - R of seconds) the scope is the same at most three months.

Partitions are created ahead: by `opsmantik migrate` (the current month, the month before it and
two ahead), by the worker at start, and on demand by the worker before a batch whose usage month
has none yet (so no event ever fails for want of a partition, and there is no default partition:
a default partition would have to be scanned and emptied before a month's partition could be
created). An archived month is never recreated: its events are dead-lettered instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta

import asyncpg

from opsmantik.db.queries import package_queries
from opsmantik.months import next_month

Q = package_queries("opsmantik.db", "partitions.sql")

MAX_AGE = timedelta(days=35)  # opsmantik.events.MAX_AGE: the gateway's acceptance window
MAX_AHEAD = timedelta(minutes=5)  # opsmantik.events.MAX_AHEAD
AHEAD_MONTHS = 2  # partitions kept ready past the current month


def month_of(t: datetime) -> date:
    u = t.astimezone(UTC)
    return date(u.year, u.month, 1)


def acceptance_months(at: datetime) -> list[date]:
    """The months an event received at `at` may belong to (1 to 3 of them)."""
    return months_between(month_of(at - MAX_AGE), month_of(at + MAX_AHEAD))


def months_between(lo: date, hi: date) -> list[date]:
    out = []
    m = lo
    while m <= hi:
        out.append(m)
        m = next_month(m)
    return out


def dedupe_months(usage_month: date, received_at: datetime, now: datetime) -> tuple[date, date]:
    """[lo, hi] of the months a copy of an event must be looked up in before it is ledgered."""
    lo = month_of(received_at - MAX_AGE)
    hi = month_of(max(now, received_at) + MAX_AHEAD)
    return min(lo, usage_month), max(hi, usage_month)


def ahead_months(now: datetime) -> list[date]:
    """The partitions `migrate` and the worker keep ready: the acceptance window plus two ahead."""
    months = acceptance_months(now)
    for _ in range(AHEAD_MONTHS):
        months.append(next_month(months[-1]))
    return months


async def is_partitioned(conn: asyncpg.Connection) -> bool:
    return bool(await conn.fetchval(Q["is_partitioned"]))


async def archived(conn: asyncpg.Connection, months: Iterable[date]) -> set[date]:
    return {r["month"] for r in await conn.fetch(Q["archived_months"], sorted(set(months)))}


async def ensure(conn: asyncpg.Connection, months: Iterable[date]) -> tuple[list[date], set[date]]:
    """Create the missing partitions of `months`; returns (created, archived months skipped)."""
    wanted = sorted(set(months))
    gone = await archived(conn, wanted)
    created = [m for m in wanted if m not in gone and await conn.fetchval(Q["ensure_partition"], m)]
    return created, gone


async def ensure_ahead(conn: asyncpg.Connection, now: datetime | None = None) -> list[date]:
    created, _ = await ensure(conn, ahead_months(now or datetime.now(UTC)))
    return created


async def partition_months(conn: asyncpg.Connection) -> list[date]:
    rows = await conn.fetch(Q["partition_months"])
    return [date(int(r["label"][:4]), int(r["label"][5:7]), 1) for r in rows]


class PartitionCache:
    """The worker's view of which months have a partition (or are archived), refreshed on a miss."""

    def __init__(self) -> None:
        self.present: set[date] = set()
        self.archived: set[date] = set()

    def forget(self) -> None:
        """After a failed batch: a partition may have been archived meanwhile; ask again."""
        self.present.clear()

    async def prepare(self, conn: asyncpg.Connection, months: Iterable[date]) -> set[date]:
        """Make sure every month not archived has a partition; returns the archived ones."""
        wanted = set(months)
        missing = wanted - self.present - self.archived
        if missing:
            # on a miss also create the months after it: the next month's partition is ready
            # long before its first event
            ahead = set(missing)
            for x in missing:
                for _ in range(AHEAD_MONTHS):
                    if x >= date(9999, 12, 1):
                        break
                    x = next_month(x)
                    ahead.add(x)
            _, gone = await ensure(conn, ahead)
            self.archived |= gone
            self.present |= ahead - gone
        return wanted & self.archived
