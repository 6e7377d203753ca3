"""Bytes per ledger row on disk before and after migration 0009 (docs/scaling.md).

`python -m tests.bench.ledger_bytes [ROWS]`: a scratch database on the local Postgres, migrations
0001-0008, ROWS (default 200,000) ledger rows as the worker writes them (random UUIDv4 event ids,
a 3-key properties object, one site, one month), sizes per row; then 0009, sizes per row again;
then the partition's indexes rebuilt (REINDEX: what a month that left the acceptance window can
afford, its index no longer takes random inserts).
Heap = pg_table_size (with TOAST and FSM/VM), indexes = pg_indexes_size, summed over partitions.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sys
import tempfile
from pathlib import Path

import asyncpg
from opsmantik import schema_files, sites
from opsmantik.config import Settings
from opsmantik.db.migrate import migrate

ROWS_SQL = """
INSERT INTO ingest_idempotency (site_id, event_id, event_type, occurred_at, usage_month, billing_month,
    quantity, billing_class, path, received_at, kafka_partition, kafka_offset, properties)
SELECT $1, gen_random_uuid()::text, 'page_view', t, date_trunc('month', t AT TIME ZONE 'UTC')::date,
       date_trunc('month', t AT TIME ZONE 'UTC')::date, 1, 'included', 'kafka', t + interval '3 ms',
       g % 12, g,
       '{"path": "/pricing", "plan": "pro", "ref": "bench"}'::jsonb
FROM generate_series(1, $2::int) AS g,
     LATERAL (SELECT '2026-10-01'::timestamptz + g * interval '10 ms') AS x (t)
"""
TABLES = """
SELECT relid FROM pg_partition_tree('ingest_idempotency') WHERE isleaf
UNION SELECT 'ingest_idempotency'::regclass
WHERE (SELECT relkind FROM pg_class WHERE oid = 'ingest_idempotency'::regclass) = 'r'
"""
SIZES = f"""
SELECT coalesce(sum(pg_table_size(relid)), 0)::bigint AS heap,
       coalesce(sum(pg_indexes_size(relid)), 0)::bigint AS indexes
FROM ({TABLES}) AS t
"""
INDEXES = f"""
SELECT i.indexrelid::regclass::text AS name, pg_relation_size(i.indexrelid) AS bytes
FROM pg_index i JOIN ({TABLES}) AS t ON t.relid = i.indrelid ORDER BY 1
"""


async def measure(rows: int) -> dict[str, object]:
    base = Settings.from_env()
    name = f"opsmantik_bytes_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(base.database_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        conn = await asyncpg.connect(base.database_url.rsplit("/", 1)[0] + "/" + name)
        try:
            with tempfile.TemporaryDirectory() as tmp:
                for p in schema_files.migrations_dir().iterdir():
                    if p.name.endswith(".sql") and p.name[:4] <= "0008":
                        (Path(tmp) / p.name).write_text(p.read_text(encoding="utf-8"), encoding="utf-8")
                await migrate(conn, Path(tmp))
            site = (await sites.create_site(conn, "bytes")).site_id
            await conn.execute(ROWS_SQL, site, rows)
            await conn.execute("VACUUM (ANALYZE) ingest_idempotency")
            out: dict[str, object] = {"rows": rows}
            for phase in ("before_0009", "after_0009", "after_0009_reindexed"):
                if phase == "after_0009":
                    await migrate(conn)
                    await conn.execute("VACUUM (ANALYZE) ingest_idempotency")
                if phase == "after_0009_reindexed":  # a month no longer written: its index rebuilt sorted
                    await conn.execute("REINDEX TABLE ingest_idempotency")
                s = await conn.fetchrow(SIZES)
                idx = [dict(r) for r in await conn.fetch(INDEXES) if r["bytes"] > 8192]
                out[phase] = {
                    "heap_per_row": round(s["heap"] / rows, 1),
                    "indexes_per_row": round(s["indexes"] / rows, 1),
                    "total_per_row": round((s["heap"] + s["indexes"]) / rows, 1),
                    "indexes": {r["name"]: round(r["bytes"] / rows, 1) for r in idx},
                }
            return out
        finally:
            await conn.close()
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


def main(argv: list[str]) -> int:
    rows = int(argv[0]) if argv else 200_000
    print(json.dumps(asyncio.run(measure(rows)), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
