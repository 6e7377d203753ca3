"""One batch of ingest messages → one Postgres transaction: ledger, invoice, freshness.

Exactly-once comes from the ledger, not from Kafka. The ledger is partitioned by usage month
(migration 0009), its primary key (site_id, event_id, usage_month):
0. make sure the batch's months have a partition (outside the transaction, cached),
1. lock the batch's sites (hashed buckets, fixed order), then drop the events already ledgered in
   another month of their dedupe scope (opsmantik.db.partitions.dedupe_months): the same
   event_id sent again with a time in another month is a duplicate,
   then lock the batch's invoice rows in a fixed order (the running counts),
2. insert ledger rows ON CONFLICT DO NOTHING; RETURNING says which are new,
3. decide each new row's class in ledger order, fix up the overlimit ones,
4. add only the new rows to the invoice, record dead letters and freshness,
5. COMMIT (the caller publishes to the billable topic and acks only after this).
A replayed message finds its row already there and adds nothing.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import NamedTuple

import asyncpg

from opsmantik.billing.rules import OVERLIMIT, assign_classes, billing_month
from opsmantik.db.partitions import PartitionCache, dedupe_months
from opsmantik.db.queries import package_queries
from opsmantik.worker.message import DeadLetter, IngestEvent, dead_letter

Q = package_queries("opsmantik.worker", "ledger.sql")
SITE_LOCK_BUCKETS = 1024  # lock_sites: bounded number of advisory locks per batch
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
    rows: list[LedgerRow]  # canonical rows of every ledgered event of the batch
    new_received_at: list[datetime]  # received_at of the rows this batch inserted


def dedupe_in_order(events: list[IngestEvent]) -> list[IngestEvent]:
    """Ledger order (partition, offset); the first copy of a (site, event_id) wins."""
    seen: set[tuple[uuid.UUID, str]] = set()
    out = []
    for ev in sorted(events, key=lambda e: (e.partition, e.offset)):
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
        quotas: dict[uuid.UUID, int | None] = {}
        if unique:
            rows = await conn.fetch(Q["site_quotas"], list({e.site_id for e in unique}))
            quotas = {r["site_id"]: r["monthly_quota"] for r in rows}
        unknown = [e for e in unique if e.site_id not in quotas]
        dead = dead + [
            dead_letter(e.partition, e.offset, "unknown site", e.raw, str(e.site_id), e.event_id)
            for e in unknown
        ]
        unique = [e for e in unique if e.site_id in quotas]
        gone = [e for e in unique if e.usage_month in archived]
        dead = dead + [
            dead_letter(e.partition, e.offset, "usage month is archived", e.raw, str(e.site_id), e.event_id)
            for e in gone
        ]
        unique = [e for e in unique if e.usage_month not in archived]
        now = datetime.now(UTC)
        scope = {e.key: dedupe_months(e.usage_month, e.received_at, now) for e in unique}

        new_keys: list[tuple[uuid.UUID, str]] = []
        overlimit = 0
        new_received: list[datetime] = []
        if unique:
            buckets = sorted({e.site_id.int % SITE_LOCK_BUCKETS for e in unique})
            await conn.execute(Q["lock_sites"], buckets)
            copies = await conn.fetch(
                Q["cross_month_copies"],
                [e.site_id for e in unique],
                [e.event_id for e in unique],
                [e.usage_month for e in unique],
                [scope[e.key][0] for e in unique],
                [scope[e.key][1] for e in unique],
            )
            elsewhere: set[tuple[uuid.UUID, str]] = {(r[0], r[1]) for r in copies}
        else:
            elsewhere = set()
        fresh_candidates = [e for e in unique if e.key not in elsewhere]
        if fresh_candidates:
            closed = frozenset(
                r["month"]
                for r in await conn.fetch(
                    Q["closed_months_from"], min(e.usage_month for e in fresh_candidates)
                )
            )
            months = {m: billing_month(m, closed) for m in {e.usage_month for e in fresh_candidates}}
            bmonth = {e.key: months[e.usage_month] for e in fresh_candidates}
            inv = sorted({(e.site_id, bmonth[e.key]) for e in fresh_candidates})
            locked = await conn.fetch(Q["lock_invoice_rows"], [k[0] for k in inv], [k[1] for k in inv])
            counts = {(r["site_id"], r["month"]): r["events"] for r in locked}

            inserted = await conn.fetch(
                Q["insert_ledger"],
                [e.site_id for e in fresh_candidates],
                [e.event_id for e in fresh_candidates],
                [e.type for e in fresh_candidates],
                [e.occurred_at for e in fresh_candidates],
                [e.usage_month for e in fresh_candidates],
                [bmonth[e.key] for e in fresh_candidates],
                [e.quantity for e in fresh_candidates],
                [e.path for e in fresh_candidates],
                [e.received_at for e in fresh_candidates],
                [e.partition for e in fresh_candidates],
                [e.offset for e in fresh_candidates],
                [e.properties for e in fresh_candidates],
            )
            fresh = {(r[0], r[1]) for r in inserted}  # RETURNING site_id, event_id
            new_events = [e for e in fresh_candidates if e.key in fresh]  # still in ledger order
            classes = assign_classes([(e.site_id, bmonth[e.key]) for e in new_events], counts, quotas)

            over = [e for e, c in zip(new_events, classes, strict=True) if c == OVERLIMIT]
            if over:
                await conn.execute(
                    Q["mark_overlimit"],
                    [e.site_id for e in over],
                    [e.event_id for e in over],
                    [e.usage_month for e in over],
                )
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
            new_keys = [e.key for e in new_events]
            overlimit = len(over)
            new_received = [e.received_at for e in new_events]

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
        canonical: list[LedgerRow] = []
        if unique:
            rows = await conn.fetch(
                Q["ledger_rows"],
                [e.site_id for e in unique],
                [e.event_id for e in unique],
                [scope[e.key][0] for e in unique],
                [scope[e.key][1] for e in unique],
            )
            make = LedgerRow._make
            canonical = [make(r) for r in rows]  # ledger_rows selects the fields in order
    return BatchResult(
        new=len(new_keys),
        duplicates=len(events) - len(unknown) - len(gone) - len(new_keys),
        dead_letters=len(dead),
        overlimit=overlimit,
        rows=canonical,
        new_received_at=new_received,
    )
