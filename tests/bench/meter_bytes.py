"""Meter storage bytes per event, before and after compaction (docs/benchmarks.md "Meters").

`python -m tests.bench.meter_bytes [EVENTS]`: a scratch database on the local Postgres (created and
dropped here; the dev database is not touched), every migration, one site, EVENTS (default
100,000) events spread evenly over one UTC day, written by the worker's own code
(meters/aggregate.py accumulate + write, in batches of 2,000 as the worker commits them) into the
2 built-in meters plus 5 defined ones:
  tokens  SUM(tokens) by model (100 values)     calls   COUNT by region (5 values)
  users   UNIQUE_COUNT(user) (20,000 values)    slowest MAX(ms)        last LATEST(ms)
Each event has one of 50 subjects. Sizes: pg_table_size + pg_indexes_size of meter_buckets and
meter_unique_values ÷ events, of the live rows (copied into fresh tables with the same indexes;
a running table also carries dead row versions until vacuum reuses them), before and after
`meters compact` of the day.
"""

from __future__ import annotations

import asyncio
import json
import random
import secrets
import sys
import uuid
from datetime import UTC, date, datetime, timedelta

import asyncpg
import orjson
from opsmantik import sites
from opsmantik.config import Settings
from opsmantik.db.migrate import migrate
from opsmantik.meters import aggregate, compact, definitions

DAY = datetime(2025, 6, 10, tzinfo=UTC)
BATCH = 2000
TABLES = ("meter_buckets", "meter_unique_values")


def events(site: uuid.UUID, n: int, rng: random.Random) -> list[aggregate.Fact]:
    step = timedelta(days=1) / n
    out = []
    for i in range(n):
        props = {
            "tokens": rng.randint(1, 4000),
            "model": f"model-{rng.randrange(100)}",
            "region": rng.choice(["eu", "us", "ap", "sa", "af"]),
            "user": f"user-{rng.randrange(20_000)}",
            "ms": round(rng.uniform(1, 900), 2),
        }
        at = DAY + step * i
        out.append(
            aggregate.Fact(
                site,
                f"ev-{i:08d}",
                "llm_call",
                at,
                date(2025, 6, 1),
                1,
                orjson.dumps(props).decode(),
                f"cust-{rng.randrange(50)}",
            )
        )
    return out


async def sizes(conn: asyncpg.Connection, n: int) -> dict[str, object]:
    """The live rows copied into a fresh table with the same indexes (a VACUUM FULL keeps the row
    versions a replication slot's or another session's snapshot may still see)."""
    rows = []
    for t in TABLES:
        await conn.execute(f"CREATE TABLE live_{t} (LIKE {t} INCLUDING ALL)")
        await conn.execute(f"INSERT INTO live_{t} SELECT * FROM {t}")
        rows.append(
            await conn.fetchrow(
                f"SELECT '{t}' AS name, pg_table_size('live_{t}') AS heap, "
                f"pg_indexes_size('live_{t}') AS indexes, (SELECT count(*) FROM live_{t}) AS n"
            )
        )
        await conn.execute(f"DROP TABLE live_{t}")
    total = sum(r["heap"] + r["indexes"] for r in rows)
    return {
        "bucket_rows": rows[0]["n"],
        "unique_value_rows": rows[1]["n"],
        **{
            r["name"]: {
                "heap_per_event": round(r["heap"] / n, 1),
                "indexes_per_event": round(r["indexes"] / n, 1),
            }
            for r in rows
        },
        "total_bytes_per_event": round(total / n, 1),
    }


async def measure(n: int) -> dict[str, object]:
    base = Settings.from_env()
    name = f"opsmantik_meterbytes_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(base.database_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        conn = await asyncpg.connect(base.database_url.rsplit("/", 1)[0] + "/" + name)
        try:
            await migrate(conn)
            for slug, agg, vp, gb in [
                ("tokens", "SUM", "$.tokens", {"model": "$.model"}),
                ("calls", "COUNT", None, {"region": "$.region"}),
                ("users", "UNIQUE_COUNT", "$.user", {}),
                ("slowest", "MAX", "$.ms", {}),
                ("last", "LATEST", "$.ms", {}),
            ]:
                await definitions.create(conn, slug, "llm_call", agg, vp, gb)
            meters = await definitions.load(conn)
            site = (await sites.create_site(conn, "meter-bytes")).site_id
            facts = events(site, n, random.Random(26))
            for i in range(0, n, BATCH):
                async with conn.transaction():
                    await aggregate.write(conn, aggregate.accumulate(meters, facts[i : i + BATCH]))
            out: dict[str, object] = {"events": n, "meters": len(meters), "minute": await sizes(conn, n)}
            t0 = asyncio.get_running_loop().time()
            done = await compact.compact(conn, DAY + timedelta(days=1))
            out["compact_seconds"] = round(asyncio.get_running_loop().time() - t0, 2)
            out["quarter_hour"] = await sizes(conn, n)
            out["quarter_buckets_written"] = done.quarter_buckets_written
            return out
        finally:
            await conn.close()
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


def main(argv: list[str]) -> int:
    n = int(argv[0]) if argv else 100_000
    print(json.dumps(asyncio.run(measure(n)), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
