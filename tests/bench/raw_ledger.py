"""Baseline: one asyncpg connection writing ledger rows with the worker's SQL shape
(unnest + ON CONFLICT DO NOTHING + the usage upsert, one statement per batch, autocommit), or
with `--copy` the machine's ceiling for ledger rows: binary COPY straight into the ledger table
(fresh ids, no conflict check, no invoice), one COPY per batch.

`python -m tests.bench.raw_ledger --dsn URL --site UUID --batch N --seconds S [--copy]` prints
one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import orjson
from opsmantik.db.queries import load_queries

from tests.bench.stats import percentile

Q = load_queries(Path(__file__).with_name("bench.sql"))


COPY_COLUMNS = (
    "site_id",
    "event_id",
    "event_type",
    "occurred_at",
    "usage_month",
    "billing_month",
    "quantity",
    "billing_class",
    "path",
    "received_at",
    "kafka_partition",
    "kafka_offset",
    "properties",
)


async def run_copy(dsn: str, site: uuid.UUID, batch: int, seconds: float, tag: str) -> dict[str, object]:
    conn = await asyncpg.connect(dsn)
    now = datetime.now(UTC)
    month = now.date().replace(day=1)
    props = '{"path": "/pricing", "plan": "pro", "ref": "bench"}'
    lat_ms: list[float] = []
    t0 = time.monotonic()
    end = t0 + seconds
    n = 0
    while time.monotonic() < end:
        records = [
            (
                site,
                f"{tag}-{n + i}",
                "page_view",
                now,
                month,
                month,
                1,
                "included",
                "kafka",
                now,
                0,
                n + i,
                props,
            )
            for i in range(batch)
        ]
        s = time.perf_counter()
        await conn.copy_records_to_table("ingest_idempotency", records=records, columns=COPY_COLUMNS)
        lat_ms.append((time.perf_counter() - s) * 1000)
        n += batch
    elapsed = time.monotonic() - t0
    await conn.close()
    return {
        "events": n,
        "seconds": elapsed,
        "batches": len(lat_ms),
        "p50_ms": percentile(lat_ms, 50),
        "p95_ms": percentile(lat_ms, 95),
        "p99_ms": percentile(lat_ms, 99),
    }


async def run(dsn: str, site: uuid.UUID, batch: int, seconds: float, tag: str) -> dict[str, object]:
    conn = await asyncpg.connect(dsn)
    stmt = await conn.prepare(Q["raw_ledger_insert"])
    now = datetime.now(UTC)
    sites = [site] * batch
    times = [now] * batch
    qty = [1] * batch
    parts = [0] * batch
    props = ['{"path": "/pricing", "plan": "pro", "ref": "bench"}'] * batch
    rows = 0
    lat_ms: list[float] = []
    t0 = time.monotonic()
    end = t0 + seconds
    n = 0
    while time.monotonic() < end:
        ids = [f"{tag}-{n + i}" for i in range(batch)]
        offsets = list(range(n, n + batch))
        s = time.perf_counter()
        await stmt.fetch(sites, ids, times, qty, times, parts, offsets, props)
        lat_ms.append((time.perf_counter() - s) * 1000)
        n += batch
        rows += batch
    elapsed = time.monotonic() - t0
    await conn.close()
    return {
        "events": rows,
        "seconds": elapsed,
        "batches": len(lat_ms),
        "p50_ms": percentile(lat_ms, 50),
        "p95_ms": percentile(lat_ms, 95),
        "p99_ms": percentile(lat_ms, 99),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--site", type=uuid.UUID, required=True)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--tag", default="raw")
    parser.add_argument("--copy", action="store_true", help="binary COPY into the ledger table (the ceiling)")
    args = parser.parse_args()
    result = asyncio.run(
        (run_copy if args.copy else run)(args.dsn, args.site, args.batch, args.seconds, args.tag)
    )
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
