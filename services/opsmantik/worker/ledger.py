"""One batch of ingest messages → one Postgres transaction: ledger, invoice, freshness.

Exactly-once comes from the ledger, not from Kafka. The ledger is partitioned by usage month
(migration 0009), its primary key (site_id, event_id, usage_month). `write_batch` makes sure the
batch's months have a partition (outside the transaction, cached), then runs these steps, each a
function below, in one transaction:

1. `close_lock_shared`: a month close waits for this batch (and the batch table exists,
   ledger.sql batch_table),
2. `dedupe_in_order`: the first copy of a (site, event_id) in (partition, offset) order wins,
3. `drop_unknown_sites`, `drop_archived`: dead letters, with their reason,
4. `lock_sites_and_find_ledgered`: lock the batch's sites (hashed buckets, fixed order), copy the
   events into the batch table (binary COPY), then find the events already ledgered in any month
   of their dedupe scope (opsmantik.db.partitions.dedupe_months), their own included: duplicates
   (the same event_id sent again with a time in another month is one too), each with its
   billable message; they leave the batch table. Only a batch holding a site's lock ledgers its
   events, so the others are new until COMMIT,
5. `lock_invoice_rows`: the billing month of each new event, then its invoice row locked in a
   fixed order (the running counts); each new row's class in ledger order (billing.rules),
6. `insert_new_rows`: the new rows (the batch table's) with their classes; RETURNING is each
   row's billable message, formatted by Postgres (ledger.sql insert_ledger: the bytes
   billable.to_billable and ce_headers make of `read_back_rows`' row); a row already there means
   the lock was not held: the batch is retried,
7. `add_to_invoice`: only the new rows, and `add_to_meters`: their meter aggregates
   (opsmantik.meters.aggregate, docs/meters.md), then `crossings.decide`: the usage alerts'
   crossings of the touched (site, billing month), notifications into alert_outbox (docs/alerts.md),
8. `record_dead_letters`, `record_freshness`,
then COMMIT; the caller publishes the billable messages of every event of the batch, new or not
(`in_ledger_order`), and acks only after that.
A replayed message finds its row already there and adds nothing.
"""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from collections.abc import Sequence
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
from opsmantik.errors import Unavailable
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
    billable: list[Message]  # of every ledgered event of the batch, new or not, in ledger order
    # received_at of the rows this batch inserted, with how many have it (a request's events
    # share one): the freshness figures per distinct value, not per event
    new_received: dict[datetime, int]


_LEDGER_ORDER = itemgetter(9, 10)  # IngestEvent (partition, offset)
_RECEIVED_AT = itemgetter(IngestEvent._fields.index("received_at"))
_KEY = itemgetter(IngestEvent._fields.index("key"))


def dedupe_in_order(events: list[IngestEvent]) -> list[IngestEvent]:
    """Ledger order (partition, offset); the first copy of a (site, event_id) wins."""
    ordered = sorted(events, key=_LEDGER_ORDER)
    if len(set(map(_KEY, ordered))) == len(ordered):  # the common case: no copy (one C loop)
        return ordered
    seen: set[tuple[uuid.UUID, str]] = set()
    out = []
    for ev in ordered:
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


# The batch's events go to Postgres by binary COPY into a temporary table (ledger.sql batch_table,
# created with the close lock's round trip) instead of as arrays: asyncpg encodes an array
# parameter with Python-level ABC checks per element, a COPY record by its column codecs alone
# (issue 35). The columns are IngestEvent's first fields, so the events themselves are the records.
BATCH_TABLE = "worker_batch"
# (IngestEvent field, batch_table column): the table's columns are the event's first fields, in order
_FIELD_COLUMNS = (
    ("site_id", "site_id"),
    ("event_id", "event_id"),
    ("type", "event_type"),
    ("occurred_us", "occurred_us"),
    ("usage_month", "usage_month"),
    ("quantity", "quantity"),
    ("properties", "properties"),
    ("received_us", "received_us"),
    ("path", "path"),
    ("partition", "kafka_partition"),
    ("offset", "kafka_offset"),
    ("subject", "subject"),
)
BATCH_COLUMNS = tuple(column for _, column in _FIELD_COLUMNS)
assert IngestEvent._fields[: len(_FIELD_COLUMNS)] == tuple(f for f, _ in _FIELD_COLUMNS), (
    "IngestEvent's fields moved: _FIELD_COLUMNS (and ledger.sql batch_table) follow them"
)
_BEGIN = Q["close_lock_shared"] + ";\n" + Q["batch_table"]


async def _write_batch(
    conn: asyncpg.Connection,
    topic: str,
    instance: str,
    events: list[IngestEvent],
    dead: list[DeadLetter],
    archived: set[date],
) -> BatchResult:
    async with conn.transaction():
        # a month close waits for this batch (docs/billing.md); the batch table exists
        await conn.execute(_BEGIN)  # Q["close_lock_shared"], then Q["batch_table"]
        unique = dedupe_in_order(events)
        unique, quotas, unknown = await drop_unknown_sites(conn, unique)
        unique, gone = drop_archived(unique, archived)
        dead = dead + unknown + gone
        ledgered = await lock_sites_and_find_ledgered(conn, unique, datetime.now(UTC))
        new_events = [e for i, e in enumerate(unique) if i not in ledgered] if ledgered else unique
        classes: list[str] = []
        inserted: list[asyncpg.Record] = []
        meters = aggregate.Increments()  # a batch of duplicates only counts nothing
        if new_events:
            bmonth, counts = await lock_invoice_rows(conn, new_events)
            classes = assign_classes([(e.site_id, bmonth[e.key]) for e in new_events], counts, quotas)
            inserted = await insert_new_rows(conn, new_events, bmonth, classes)
            await add_to_invoice(conn, new_events, classes, bmonth)
            meters = await add_to_meters(conn, new_events, bmonth)  # bmonth exists only here
            await crossings.decide(conn, {(e.site_id, bmonth[e.key]) for e in new_events}, meters)
        new_received = Counter(map(_RECEIVED_AT, new_events))
        await record_dead_letters(conn, topic, dead)
        await record_freshness(conn, instance, new_received)
    aggregate.count_skips(meters)  # after the commit: a retried transaction counts once
    return BatchResult(
        new=len(new_events),
        duplicates=len(events) - len(unknown) - len(gone) - len(new_events),
        dead_letters=len(dead),
        overlimit=sum(1 for c in classes if c == OVERLIMIT),
        billable=in_ledger_order(len(unique), ledgered, inserted),
        new_received=new_received,
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


class ScopePairs(NamedTuple):
    """The batch's distinct (usage month, received_at), each with its dedupe months [lo, hi]
    (received_at as IngestEvent.received_us: the batch table's column)."""

    usage_month: list[date]
    received_us: list[int]
    lo: list[date]
    hi: list[date]


def scope_pairs(unique: list[IngestEvent], now: datetime) -> ScopePairs:
    """dedupe_months of each distinct (usage month, received_at) of the batch (a request's events
    share one): ledgered_copies joins each event to its pair's scope."""
    pairs = {(e.usage_month, e.received_at, e.received_us) for e in unique}
    out = ScopePairs([], [], [], [])
    for month, received, received_us in pairs:
        lo, hi = dedupe_months(month, received, now)
        out.usage_month.append(month)
        out.received_us.append(received_us)
        out.lo.append(lo)
        out.hi.append(hi)
    return out


BillingMonths = dict[tuple[uuid.UUID, str], date]  # event key -> billing month
# A billable message: key, value, ce_id, ce_source, ce_time, ce_subject (None: no such header)
Message = Sequence[str | None]


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


async def lock_sites_and_find_ledgered(
    conn: asyncpg.Connection, unique: list[IngestEvent], now: datetime
) -> dict[int, list[Message]]:
    """Lock the batch's sites (hashed buckets, ascending), copy its events into the batch table,
    then find those already in the ledger in any month of their dedupe scope: {position in
    `unique`: its billable message}; they leave the batch table, which then holds the new rows.
    The others are new, and stay so until COMMIT: only a batch holding their site's lock ledgers."""
    if not unique:
        return {}
    await site_locks.lock_sites(conn, (e.site_id for e in unique))
    await conn.copy_records_to_table(BATCH_TABLE, records=unique, columns=BATCH_COLUMNS)
    found = await conn.fetch(Q["ledgered_copies"], *scope_pairs(unique, now))
    if not found:
        return {}
    position = {(e.partition, e.offset): i for i, e in enumerate(unique)}
    ledgered: dict[int, list[Message]] = {}
    for r in found:  # ledgered_copies: kafka_partition, kafka_offset, then the message's columns
        ledgered.setdefault(position[(r[0], r[1])], []).append(tuple(r)[2:])
    gone = [unique[i] for i in ledgered]
    await conn.execute(Q["drop_ledgered"], [e.partition for e in gone], [e.offset for e in gone])
    return ledgered


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
    conn: asyncpg.Connection, new: list[IngestEvent], bmonth: BillingMonths, classes: list[str]
) -> list[asyncpg.Record]:
    """Insert the new rows (the batch table's, `new` in ledger order) with their classes; returns
    their billable messages, in ledger order (the order they were inserted in)."""
    months = {e.usage_month: bmonth[e.key] for e in new}  # one billing month per usage month
    inserted: list[asyncpg.Record] = await conn.fetch(
        Q["insert_ledger"],
        bytes([c == OVERLIMIT for c in classes]),  # a byte per new row: 1 overlimit
        list(months),
        list(months.values()),
    )
    if len(inserted) != len(new):
        # ledgered_copies did not find a row that was there at the insert: only a batch holding
        # the site's lock ledgers its events, so this is a bug's sign. The transaction rolls back
        # and the batch is retried (and then finds the row): no class is decided on a wrong count.
        raise Unavailable(f"{len(new) - len(inserted)} of {len(new)} new rows were in the ledger already")
    return inserted


def in_ledger_order(
    n: int, ledgered: dict[int, list[Message]], inserted: list[asyncpg.Record]
) -> list[Message]:
    """The batch's billable messages in ledger order: the new rows' (`inserted`, in order) with
    the duplicates' at their positions."""
    if not ledgered:
        return inserted
    out: list[Message] = []
    rest = iter(inserted)
    for i in range(n):
        found = ledgered.get(i)
        if found is None:
            out.append(next(rest))
        else:
            out.extend(found)
    return out


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
    # Fact(...) without the NamedTuple's Python __new__ (voided_into: None)
    new, fact = tuple.__new__, aggregate.Fact
    facts: list[aggregate.Fact] = [
        new(
            fact,
            (
                e.site_id,
                e.event_id,
                e.type,
                e.occurred_at,
                bmonth[e.key],
                e.quantity,
                e.properties,
                e.subject,
                None,
            ),
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


async def record_freshness(
    conn: asyncpg.Connection, instance: str, new_received: dict[datetime, int]
) -> None:
    """The per-minute freshness rollup of the new rows (slo_freshness), from each distinct
    received_at and its number of rows."""
    if new_received:
        now = datetime.now(UTC)
        lags = [((now - r).total_seconds() * 1000.0, n) for r, n in new_received.items()]
        await conn.execute(
            Q["add_freshness"],
            now,
            instance,
            sum(n for _, n in lags),
            sum(n for x, n in lags if x <= 1000.0),
            sum(n for x, n in lags if x <= 5000.0),
            max(x for x, _ in lags),
            sum(x * n for x, n in lags),
        )


async def read_back_rows(
    conn: asyncpg.Connection, unique: list[IngestEvent], scope: Scope
) -> list[LedgerRow]:
    """The canonical ledger rows of the events, as the Python reference reads them
    (billable.to_billable and ce_headers make a message of one): what insert_ledger and
    ledgered_copies format in SQL is tested against it (tests/integration/test_worker_billable_sql.py)."""
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
