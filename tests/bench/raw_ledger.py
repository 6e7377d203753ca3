"""Baseline: one asyncpg connection writing ledger rows with the worker's SQL shape
(unnest + ON CONFLICT DO NOTHING + the usage upsert, one statement per batch, autocommit).

`python -m tests.bench.raw_ledger --dsn URL --site UUID --batch N --seconds S` prints one JSON line.
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
    args = parser.parse_args()
    result = asyncio.run(run(args.dsn, args.site, args.batch, args.seconds, args.tag))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
