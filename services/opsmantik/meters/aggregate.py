"""A batch of newly ledgered events → the meters' bucket increments, and writing them.

Called by the worker inside the ledger's transaction with only the rows that transaction inserted
(worker/ledger.py), and by `meters backfill` with the ledger's rows: a retry, a redelivery or a
crash never counts an event twice because the ledger inserts it once. One bucket is one UTC
minute (BUCKET): every IANA zone's offset is a whole number of minutes since 1970, so MINUTE, HOUR,
DAY and MONTH windows in any zone are unions of buckets. The same SQL statement that adds a batch's
buckets adds their hour and day rollups (aggregate.sql, meters/rollup.py).
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import NamedTuple

import asyncpg
import orjson
from prometheus_client import Counter as PromCounter

from opsmantik.db.queries import package_queries
from opsmantik.meters.definitions import QUANTITY, Meter
from opsmantik.meters.values import Skip, event_data, groups_of, value_of

Q = package_queries("opsmantik.meters", "aggregate.sql")
SKIPPED = PromCounter(
    "opsmantik_meter_skipped",
    "Events a meter did not count (the event is billed): by meter slug and reason (docs/meters.md)",
    ["meter", "reason"],
)


class Fact(NamedTuple):
    """A ledger row as a meter reads it."""

    site_id: uuid.UUID
    event_id: str
    event_type: str
    occurred_at: datetime
    billing_month: date
    quantity: int
    properties: str | None  # JSON text
    subject: str | None
    voided_into: date | None = None  # the booked month of the event's void (billing_voids), if voided


ORDERED = frozenset({"MIN", "MAX", "LATEST"})  # the aggregations that read lo, hi, latest
BucketKey = tuple[uuid.UUID, uuid.UUID, datetime, date, str, str]  # meter, site, minute, bm, subject, groups


@dataclass(slots=True)
class Bucket:
    n: int = 0
    total: Decimal = Decimal(0)
    lo: Decimal | None = None
    hi: Decimal | None = None
    latest: tuple[datetime, str, Decimal] | None = None  # (occurred_at, event_id, value)
    uniques: set[str] = field(default_factory=set)

    def add(self, fact: Fact, value: Decimal | str | None, ordered: bool) -> None:
        """`ordered`: the meter reads lo, hi or latest (MIN, MAX, LATEST); the others leave
        them NULL, so a void need not recompute them (meters/voids.py)."""
        self.n += 1
        if isinstance(value, Decimal):
            self.total += value
            if not ordered:
                return
            self.lo = value if self.lo is None else min(self.lo, value)
            self.hi = value if self.hi is None else max(self.hi, value)
            mark = (fact.occurred_at, fact.event_id, value)
            if self.latest is None or mark[:2] > self.latest[:2]:
                self.latest = mark
        elif isinstance(value, str):
            self.uniques.add(value)
        else:
            self.total += 1  # COUNT: total = n

    def add_voided(self, value: Decimal | str | None) -> None:
        """A row billed in this bucket's month and voided: it stays in n and total (the billed
        month's statement keeps it; the void is booked as its own entry) but not in lo, hi,
        latest or the unique values, which are over the rows not voided (docs/meters.md "Voids")."""
        self.n += 1
        self.total += additive(value)

    def subtract(self, value: Decimal | str | None) -> None:
        """A void booked in this bucket's month: minus one event and its value."""
        self.n -= 1
        self.total -= additive(value)

    def contributes(self) -> bool:
        """False for a bucket whose rows and voids cancel out (n = 0, total = 0) with no value
        left for min, max or latest: it is not kept (voids.sql drop_empty, the same rule)."""
        return bool(self.n or self.total or self.lo is not None or self.latest is not None)


def additive(value: Decimal | str | None) -> Decimal:
    """What an event adds to `total`: its value (SUM, AVG, MIN, MAX, LATEST), 1 (COUNT) or
    nothing (UNIQUE_COUNT, whose total is unused)."""
    if isinstance(value, Decimal):
        return value
    return Decimal(0) if isinstance(value, str) else Decimal(1)


@dataclass
class Increments:
    buckets: dict[BucketKey, Bucket] = field(default_factory=dict)
    skipped: Counter[tuple[str, str]] = field(default_factory=Counter)  # (slug, reason)

    def bucket(self, key: BucketKey) -> Bucket:
        b = self.buckets.get(key)
        if b is None:
            b = self.buckets[key] = Bucket()
        return b


def minute(t: datetime) -> datetime:
    return t.replace(second=0, microsecond=0)


def tallied(meter: Meter) -> bool:
    """A meter whose buckets a batch can add by (n, sum of quantities) per bucket: COUNT, or SUM or
    AVG of the event's quantity, without groups. Bucket.add on each of k events adds n += k and
    total += k (COUNT) or the quantities' sum (a Decimal of integers: exact), and no lo, hi,
    latest or unique value; it never skips an event."""
    if meter.group_paths:
        return False
    return meter.aggregation == "COUNT" or (
        meter.value_property == QUANTITY and meter.aggregation in ("SUM", "AVG")
    )


def accumulate(
    meters: list[Meter],
    facts: list[Fact],
    into: Increments | None = None,
    bucket_of: Callable[[datetime], datetime] = minute,
) -> Increments:
    """Pure: the increments of `facts` for every meter (no I/O, never raises on an event).
    `bucket_of`: an event's bucket from its occurred_at (a void below the compaction watermark
    writes its quarter hour, meters/voids.py).

    The `tallied` meters (the built-in `events` and `quantity` among them) are added per distinct
    (type, site, occurred_at, billing month, subject) of the facts not voided, with its count and
    quantities' sum, instead of per fact and meter: the same buckets, n and total as Bucket.add on
    each fact (tests/unit/test_meters_accumulate.py)."""
    inc = into or Increments()
    buckets, skipped = inc.buckets, inc.skipped
    # Per event type: its tallied meters (meter_id, COUNT?), and its other meters, each with
    # whether it reads the event's data and keeps lo/hi/latest (worked out once per call, not per
    # event: this loop is the worker's CPU per event).
    by_type: dict[str, tuple[list[tuple[uuid.UUID, bool]], list[tuple[Meter, bool, bool]]]] = {}
    # (type, site, occurred_at, billing month, subject) -> [events, sum of quantities]
    tally: dict[tuple[str, uuid.UUID, datetime, date, str | None], list[int]] = {}
    for fact in facts:
        kinds = by_type.get(fact.event_type)
        if kinds is None:
            matching = [m for m in meters if m.matches(fact.event_type)]
            kinds = by_type[fact.event_type] = (
                [(m.meter_id, m.aggregation == "COUNT") for m in matching if tallied(m)],
                [
                    (m, m.value_path is not None or bool(m.group_paths), m.aggregation in ORDERED)
                    for m in matching
                    if not tallied(m)
                ],
            )
        simple, relevant = kinds
        if simple:
            if fact.voided_into is None:
                key5 = (fact.event_type, fact.site_id, fact.occurred_at, fact.billing_month, fact.subject)
                t = tally.get(key5)
                if t is None:
                    tally[key5] = [1, fact.quantity]
                else:
                    t[0] += 1
                    t[1] += fact.quantity
            else:  # a voided row: per fact, as the other meters
                relevant = [(m, False, False) for m in matching_tallied(meters, fact.event_type)] + relevant
        if not relevant:
            continue
        data: object = None
        parsed = False
        at, subject = bucket_of(fact.occurred_at), fact.subject or ""
        site_id, bmonth = fact.site_id, fact.billing_month
        for meter, reads_data, ordered in relevant:
            if reads_data and not parsed:
                data = event_data(fact.event_id, orjson.loads(fact.properties) if fact.properties else None)
                parsed = True
            value = value_of(meter, data, fact.quantity)
            if isinstance(value, Skip):
                skipped[(meter.slug, value.reason)] += 1
                continue
            groups = groups_of(meter, data) if meter.group_paths else "{}"
            if isinstance(groups, Skip):
                skipped[(meter.slug, groups.reason)] += 1
                continue
            key = (meter.meter_id, site_id, at, bmonth, subject, groups)
            bucket = buckets.get(key)
            if bucket is None:
                bucket = buckets[key] = Bucket()
            if fact.voided_into is None:
                bucket.add(fact, value, ordered)
            else:  # the row in its billed month, the void in its booked month (docs/meters.md "Voids")
                bucket.add_voided(value)
                inc.bucket((meter.meter_id, site_id, at, fact.voided_into, subject, groups)).subtract(value)
    for (event_type, site_id, occurred_at, bmonth, subject_or_none), (n, quantity) in tally.items():
        at, sub = bucket_of(occurred_at), subject_or_none or ""
        for meter_id, counts in by_type[event_type][0]:
            key = (meter_id, site_id, at, bmonth, sub, "{}")
            bucket = buckets.get(key)
            if bucket is None:
                bucket = buckets[key] = Bucket()
            bucket.n += n
            bucket.total += n if counts else quantity  # Decimal + int: exact
    return inc


def matching_tallied(meters: list[Meter], event_type: str) -> list[Meter]:
    """The tallied meters of `event_type` (a voided fact takes the per-fact path with them)."""
    return [m for m in meters if m.matches(event_type) and tallied(m)]


async def write(conn: asyncpg.Connection, inc: Increments) -> None:
    """Add the increments to meter_buckets and meter_unique_values (in key order: batches of one
    site are serialised by the ledger's site locks, and a fixed order keeps any others apart)."""
    if not inc.buckets:
        return
    order = sorted(inc.buckets.items(), key=_key_order)
    rows = [
        (*k, b.n, b.total, b.lo, b.hi, *((b.latest[2], b.latest[0], b.latest[1]) if b.latest else _NO_LATEST))
        for k, b in order
        if b.contributes()
    ]
    if rows:
        await conn.execute(Q["add_buckets"], *(list(col) for col in zip(*rows, strict=True)))
    uniq = [(*k, v) for k, b in order for v in sorted(b.uniques)]
    if uniq:
        await conn.execute(Q["add_unique_values"], *(list(col) for col in zip(*uniq, strict=True)))


def _key_order(item: tuple[BucketKey, Bucket]) -> tuple[object, ...]:
    """UUIDs in byte order (Postgres' uuid order): .int orders the same and is an attribute, not a
    property building 16 bytes per bucket."""
    k = item[0]
    return (k[0].int, k[1].int, k[2], k[3], k[4], k[5])


_NO_LATEST = (None, None, None)


def count_skips(inc: Increments) -> None:
    """After the commit: a retried transaction's skips are counted once."""
    for (slug, reason), n in inc.skipped.items():
        SKIPPED.labels(slug, reason).inc(n)
