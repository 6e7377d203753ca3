"""`opsmantik meters backfill SLUG`: rebuild one meter's aggregates from the ledger, exactly.

In one transaction holding the close lock exclusively (no worker batch in flight, none starts
until the commit): the meter's buckets and rollups are deleted and recomputed from every ledger row in
Postgres with the worker's own code (meters/aggregate.py). Idempotent: running it twice gives the
same aggregates. Below the compaction watermark the rebuilt minutes are merged into quarter hours
again (meters/compact.py). Archived months are not in Postgres, so they are not in the rebuilt meter
(docs/meters.md). It stalls the worker for its duration: run it when a meter is new or small.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import asyncpg

from opsmantik.meters import aggregate, compact, definitions, rollup

CHUNK = 5000


@dataclass(frozen=True)
class Backfilled:
    slug: str
    events_read: int
    buckets: int
    skipped: dict[str, int]


async def backfill(conn: asyncpg.Connection, slug: str) -> Backfilled:
    Q = definitions.Q
    async with conn.transaction():
        await conn.execute(Q["definitions_lock"])
        meter = await definitions.get(conn, slug)
        await conn.execute(Q["clear_meter"], meter.meter_id)
        await conn.execute(Q["clear_meter_uniques"], meter.meter_id)
        await rollup.clear_meter(conn, meter.meter_id)  # rewritten with the buckets by aggregate.write
        inc = aggregate.Increments()
        after: tuple[uuid.UUID, str] = (uuid.UUID(int=0), "")
        read = 0
        while True:
            rows = await conn.fetch(Q["ledger_facts"], after[0], after[1], CHUNK)
            if not rows:
                break
            read += len(rows)
            aggregate.accumulate([meter], [aggregate.Fact(*r) for r in rows], inc)
            after = (rows[-1]["site_id"], rows[-1]["event_id"])
        await aggregate.write(conn, inc)
        mark = await compact.watermark(conn)
        if mark is not None:  # rebuilt as minutes: merged again below the watermark (no batch runs)
            lo = min((k[2] for k in inc.buckets), default=mark)
            for site_id in sorted({k[1] for k in inc.buckets}, key=lambda s: s.bytes):
                await compact.merge_locked(conn, meter.meter_id, site_id, compact.quarter(lo), mark)
        await conn.execute(Q["mark_backfilled"], meter.meter_id)
    return Backfilled(meter.slug, read, len(inc.buckets), {r: n for (_, r), n in inc.skipped.items()})
