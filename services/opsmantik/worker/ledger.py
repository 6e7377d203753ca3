"""One batch of ingest messages → one Postgres transaction: ledger, invoice, freshness.

Exactly-once comes from the ledger, not from Kafka. The ledger is partitioned by usage month
(migration 0009), its primary key (site_id, event_id, usage_month). `write_batch` makes sure the
batch's months have a partition (outside the transaction, cached), then runs these steps, each a
function below, in one transaction:

1. `close_lock_shared`: a month close waits for this batch,
2. `dedupe_in_order`: the first copy of a (site, event_id) in (partition, offset) order wins,
3. `drop_unknown_sites`, `drop_archived`: dead letters, with their reason,
4. `lock_sites_and_find_copies`: lock the batch's sites (hashed buckets, fixed order), then find
   the events already ledgered in another month of their dedupe scope
   (opsmantik.db.partitions.dedupe_months): the same event_id sent again with a time in another
   month is a duplicate,
5. `lock_invoice_rows`: the billing month of each event, then its invoice row locked in a fixed
   order (the running counts),
6. `insert_new_rows`: ON CONFLICT DO NOTHING; RETURNING says which are new,
7. `assign_and_mark_overlimit`: each new row's class in ledger order, the overlimit ones fixed up,
8. `add_to_invoice`: only the new rows, and `add_to_meters`: their meter aggregates
   (opsmantik.meters.aggregate, docs/meters.md), then `crossings.decide`: the usage alerts'
   crossings of the touched (site, billing month), notifications into alert_outbox (docs/alerts.md),
9. `record_dead_letters`, `record_freshness`,
10. `read_back_messages`: the billable topic's messages of every event of the batch, new or
    not, made by Postgres from the canonical rows (ledger.sql billable_messages: the same bytes
    billable.to_billable makes of `read_back_rows`' rows),
then COMMIT (the caller publishes to the billable topic and acks only after this).
A replayed message finds its row already there and adds nothing.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime
from operator import itemgetter
from typing import NamedTuple

import asyncpg

from opsmantik.alerts import crossings
from opsmantik.billing.rules import OVERLIMIT, assign_classes, billing_month
from opsmantik.db import site_locks
from opsmantik.db.partitions import PartitionCache, dedupe_months
from opsmantik.db.queries import package_queries
from opsmantik.meters import aggregate, definitions
from opsmantik.worker.message import DeadLetter, IngestEvent, dead_letter

Q = package_queries("opsmantik.worker", "ledger.sql")
_PARTITIONS = PartitionCache()  # one per process: months with a partition, archived months


class LedgerRow(NamedTuple):
    """A row of ingest_idempotency as the billable stream carries it (a NamedTuple: one per
    event and batch, built from the read-back's records in one C call)."""

    site_id: uuid.UUID
    event_id: str
    event_type: str
    occurred_at: datetime
    usage_month: date
    billing_month: date
    quantity: int
    billing_class: str
    path: str
    received_at: datetime
    ledgered_at: datetime
    kafka_partition: int | None
    kafka_offset: int | None
    properties: str | None


@dataclass(frozen=True)
class BatchResult:
    new: int
    duplicates: int
    dead_letters: int
    overlimit: int
    # the billable message of every ledgered event of the batch (ledger.sql billable_messages):
    # key, value, ce_id, ce_source, ce_time, ce_subject (None: no such header)
    billable: list[asyncpg.Record]
    new_received_at: list[datetime]  # received_at of the rows this batch inserted


_LEDGER_ORDER = itemgetter(9, 10)  # IngestEvent (partition, offset)


def dedupe_in_order(events: list[IngestEvent]) -> list[IngestEvent]:
    """Ledger order (partition, offset); the first copy of a (site, event_id) wins."""
    seen: set[tuple[uuid.UUID, str]] = set()
    out = []
    for ev in sorted(events, key=_LEDGER_ORDER):
        if ev.key not in seen:
            seen.add(ev.key)
            out.append(ev)
    return out


async def write_batch(
    conn: asyncpg.Connection, topic: str, instance: str, events: list[IngestEvent], dead: list[DeadLetter]
) -> BatchResult:
    """Run the whole batch in one transaction; raises (and writes nothing) on any DB error."""
    try:
        archived = await _PARTITIONS.prepare(conn, {e.usage_month for e in events})
        return await _write_batch(conn, topic, instance, events, dead, archived)
    except Exception:
        _PARTITIONS.forget()  # a partition may have been archived meanwhile: ask again on the retry
        raise


async def _write_batch(
    conn: asyncpg.Connection,
    topic: str,
    instance: str,
    events: list[IngestEvent],
    dead: list[DeadLetter],
    archived: set[date],
) -> BatchResult:
    async with conn.transaction():
        await conn.execute(Q["close_lock_shared"])  # a month close waits for this batch (docs/billing.md)
        unique = dedupe_in_order(events)
        unique, quotas, unknown = await drop_unknown_sites(conn, unique)
        unique, gone = drop_archived(unique, archived)
        dead = dead + unknown + gone
        scope = dedupe_scope(unique, datetime.now(UTC))
        elsewhere = await lock_sites_and_find_copies(conn, unique, scope)
        fresh_candidates = [e for e in unique if e.key not in elsewhere]
        new_events: list[IngestEvent] = []
        classes: list[str] = []
        bmonth: BillingMonths = {}
        meters = aggregate.Increments()  # a batch of duplicates only counts nothing
        if fresh_candidates:
            bmonth, counts = await lock_invoice_rows(conn, fresh_candidates)
            new_events = await insert_new_rows(conn, fresh_candidates, bmonth)
            classes = await assign_and_mark_overlimit(conn, new_events, bmonth, counts, quotas)
            await add_to_invoice(conn, new_events, classes, bmonth)
            meters = await add_to_meters(conn, new_events, bmonth)  # bmonth exists only here
            await crossings.decide(conn, {(e.site_id, bmonth[e.key]) for e in new_events}, meters)
        new_received = [e.received_at for e in new_events]
        await record_dead_letters(conn, topic, dead)
        await record_freshness(conn, instance, new_received)
        billable = await read_back_messages(conn, unique, scope)
    aggregate.count_skips(meters)  # after the commit: a retried transaction counts once
    return BatchResult(
        new=len(new_events),
        duplicates=len(events) - len(unknown) - len(gone) - len(new_events),
        dead_letters=len(dead),
        overlimit=sum(1 for c in classes if c == OVERLIMIT),
        billable=billable,
        new_received_at=new_received,
    )


class Scope(NamedTuple):
    """The dedupe months [lo, hi] of each event of `unique`, in its order."""

    lo: list[date]
    hi: list[date]


def dedupe_scope(unique: list[IngestEvent], now: datetime) -> Scope:
    """dedupe_months of each event: one call per (usage month, received_at), which a request's
    events share."""
    memo: dict[tuple[date, datetime], tuple[date, date]] = {}
    lo, hi = [], []
    for e in unique:
        key = (e.usage_month, e.received_at)
        months = memo.get(key)
        if months is None:
            months = memo[key] = dedupe_months(e.usage_month, e.received_at, now)
        lo.append(months[0])
        hi.append(months[1])
    return Scope(lo, hi)


BillingMonths = dict[tuple[uuid.UUID, str], date]  # event key -> billing month


async def drop_unknown_sites(
    conn: asyncpg.Connection, unique: list[IngestEvent]
) -> tuple[list[IngestEvent], dict[uuid.UUID, int | None], list[DeadLetter]]:
    """The events of known sites, every site's monthly quota, dead letters for the others."""
    quotas: dict[uuid.UUID, int | None] = {}
    if unique:
        rows = await conn.fetch(Q["site_quotas"], list({e.site_id for e in unique}))
        quotas = {r["site_id"]: r["monthly_quota"] for r in rows}
    dead = [
        dead_letter(e.partition, e.offset, "unknown site", e.raw, str(e.site_id), e.event_id)
        for e in unique
        if e.site_id not in quotas
    ]
    return [e for e in unique if e.site_id in quotas], quotas, dead


def drop_archived(
    unique: list[IngestEvent], archived: set[date]
) -> tuple[list[IngestEvent], list[DeadLetter]]:
    """A month already archived takes no more rows: its events become dead letters."""
    dead = [
        dead_letter(e.partition, e.offset, "usage month is archived", e.raw, str(e.site_id), e.event_id)
        for e in unique
        if e.usage_month in archived
    ]
    return [e for e in unique if e.usage_month not in archived], dead


async def lock_sites_and_find_copies(
    conn: asyncpg.Connection, unique: list[IngestEvent], scope: Scope
) -> set[tuple[uuid.UUID, str]]:
    """Lock the batch's sites (hashed buckets, ascending), then the keys already ledgered in
    another month of their dedupe scope."""
    if not unique:
        return set()
    await site_locks.lock_sites(conn, (e.site_id for e in unique))
    copies = await conn.fetch(
        Q["cross_month_copies"],
        [e.site_id for e in unique],
        [e.event_id for e in unique],
        [e.usage_month for e in unique],
        scope.lo,
        scope.hi,
    )
    return {(r[0], r[1]) for r in copies}


async def lock_invoice_rows(
    conn: asyncpg.Connection, fresh: list[IngestEvent]
) -> tuple[BillingMonths, dict[tuple[uuid.UUID, date], int]]:
    """Each event's billing month (its usage month, or the first open one after it), then the
    invoice rows created or locked in (site_id, month) order; returns their running counts."""
    closed = frozenset(
        r["month"] for r in await conn.fetch(Q["closed_months_from"], min(e.usage_month for e in fresh))
    )
    months = {m: billing_month(m, closed) for m in {e.usage_month for e in fresh}}
    bmonth = {e.key: months[e.usage_month] for e in fresh}
    inv = sorted({(e.site_id, bmonth[e.key]) for e in fresh})
    locked = await conn.fetch(Q["lock_invoice_rows"], [k[0] for k in inv], [k[1] for k in inv])
    return bmonth, {(r["site_id"], r["month"]): r["events"] for r in locked}


async def insert_new_rows(
    conn: asyncpg.Connection, fresh: list[IngestEvent], bmonth: BillingMonths
) -> list[IngestEvent]:
    """Insert every candidate as `included`; the ones RETURNING names are new, in ledger order."""
    inserted = await conn.fetch(
        Q["insert_ledger"],
        [e.site_id for e in fresh],
        [e.event_id for e in fresh],
        [e.type for e in fresh],
        [e.occurred_at for e in fresh],
        [e.usage_month for e in fresh],
        [bmonth[e.key] for e in fresh],
        [e.quantity for e in fresh],
        [e.path for e in fresh],
        [e.received_at for e in fresh],
        [e.partition for e in fresh],
        [e.offset for e in fresh],
        [e.properties for e in fresh],
        [e.subject for e in fresh],
    )
    new = {(r[0], r[1]) for r in inserted}  # RETURNING site_id, event_id
    return [e for e in fresh if e.key in new]


async def assign_and_mark_overlimit(
    conn: asyncpg.Connection,
    new_events: list[IngestEvent],
    bmonth: BillingMonths,
    counts: dict[tuple[uuid.UUID, date], int],
    quotas: dict[uuid.UUID, int | None],
) -> list[str]:
    """The class of each new row in ledger order, from the locked running counts; the rows past
    the quota are updated to `overlimit`."""
    classes = assign_classes([(e.site_id, bmonth[e.key]) for e in new_events], counts, quotas)
    over = [e for e, c in zip(new_events, classes, strict=True) if c == OVERLIMIT]
    if over:
        await conn.execute(
            Q["mark_overlimit"],
            [e.site_id for e in over],
            [e.event_id for e in over],
            [e.usage_month for e in over],
        )
    return classes


async def add_to_invoice(
    conn: asyncpg.Connection, new_events: list[IngestEvent], classes: list[str], bmonth: BillingMonths
) -> None:
    """Events, quantity, overlimit events and quantity of the new rows, per invoice row."""
    totals: dict[tuple[uuid.UUID, date], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for e, c in zip(new_events, classes, strict=True):
        t = totals[(e.site_id, bmonth[e.key])]
        t[0] += 1
        t[1] += e.quantity
        if c == OVERLIMIT:
            t[2] += 1
            t[3] += e.quantity
    if totals:
        keys = sorted(totals)
        await conn.execute(
            Q["add_usage"],
            [k[0] for k in keys],
            [k[1] for k in keys],
            *([totals[k][i] for k in keys] for i in range(4)),
        )


async def add_to_meters(
    conn: asyncpg.Connection, new_events: list[IngestEvent], bmonth: BillingMonths
) -> aggregate.Increments:
    """The meters' aggregates of the new rows only (docs/meters.md): the definitions are read
    under the close lock this transaction holds shared, which `meters create|delete|backfill`
    take exclusively; a meter counts the rows of the batches that started after its creation (or
    every row once backfilled), the rule a void relies on (meters/voids.py)."""
    meters = await definitions.load_for_batch(conn)
    facts = [
        aggregate.Fact(
            e.site_id, e.event_id, e.type, e.occurred_at, bmonth[e.key], e.quantity, e.properties, e.subject
        )
        for e in new_events
    ]
    inc = aggregate.accumulate(meters, facts)
    await aggregate.write(conn, inc)
    return inc


async def record_dead_letters(conn: asyncpg.Connection, topic: str, dead: list[DeadLetter]) -> None:
    if dead:
        await conn.execute(
            Q["insert_dead_letters"],
            topic,
            [d.partition for d in dead],
            [d.offset for d in dead],
            [d.site_id for d in dead],
            [d.event_id for d in dead],
            [d.reason for d in dead],
            [d.payload for d in dead],
        )


async def record_freshness(conn: asyncpg.Connection, instance: str, new_received: list[datetime]) -> None:
    """The per-minute freshness rollup of the new rows (slo_freshness)."""
    if new_received:
        now = datetime.now(UTC)
        lags = [(now - r).total_seconds() * 1000.0 for r in new_received]
        await conn.execute(
            Q["add_freshness"],
            now,
            instance,
            len(lags),
            sum(1 for x in lags if x <= 1000.0),
            sum(1 for x in lags if x <= 5000.0),
            max(lags),
            sum(lags),
        )


async def read_back_messages(
    conn: asyncpg.Connection, unique: list[IngestEvent], scope: Scope
) -> list[asyncpg.Record]:
    """The billable messages of every event of the batch, new or already there: the canonical
    ledger rows as the billable topic carries them, formatted by Postgres (one text per row
    instead of fourteen values decoded and formatted again in Python)."""
    if not unique:
        return []
    rows: list[asyncpg.Record] = await conn.fetch(
        Q["billable_messages"],
        [e.site_id for e in unique],
        [e.event_id for e in unique],
        scope.lo,
        scope.hi,
    )
    return rows


async def read_back_rows(
    conn: asyncpg.Connection, unique: list[IngestEvent], scope: Scope
) -> list[LedgerRow]:
    """The canonical ledger rows of every event of the batch, new or already there: what
    read_back_messages formats (the reference its SQL is tested against)."""
    if not unique:
        return []
    rows = await conn.fetch(
        Q["ledger_rows"],
        [e.site_id for e in unique],
        [e.event_id for e in unique],
        scope.lo,
        scope.hi,
    )
    make = LedgerRow._make
    return [make(r) for r in rows]  # ledger_rows selects the fields in order
