"""Archive + verify of one ledger month, timed (docs/benchmarks.md, issue 19).

`python -m tests.bench.archive_month [ROWS]`: a scratch database on the local Postgres, ROWS
(default 200,000) ledger rows of one site in a month three months back (random UUIDv4 ids, the
worker's row shape), its invoice row; then `opsmantik billing close` and `opsmantik archive
--json` as real processes, timed; prints the archive's JSON plus the partition's bytes per row.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime

import asyncpg
from opsmantik import sites
from opsmantik.config import Settings
from opsmantik.db.migrate import migrate
from opsmantik.months import previous_month

ROWS_SQL = """
INSERT INTO ingest_idempotency (site_id, event_id, event_type, occurred_at, usage_month, billing_month,
    quantity, billing_class, path, received_at, kafka_partition, kafka_offset, properties)
SELECT $1, gen_random_uuid()::text, 'page_view', t, $3::date, $3::date, 1, 'included', 'kafka',
       t + interval '3 ms', g % 12, g, '{"path": "/pricing", "plan": "pro", "ref": "bench"}'::jsonb
FROM generate_series(1, $2::int) AS g,
     LATERAL (SELECT $3::date + (g % 2400000) * interval '1 second') AS x (t)
"""


def run(url: str, *args: str) -> tuple[float, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSMANTIK_")}
    env.update(OPSMANTIK_DATABASE_URL=url, OPSMANTIK_BILLING_CLOSE_GRACE_DAYS="0")
    t0 = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "opsmantik.cli", *args], env=env, capture_output=True, text=True, timeout=3600
    )
    if out.returncode != 0:
        raise RuntimeError(f"opsmantik {' '.join(args)}: {out.stderr}")
    return time.monotonic() - t0, out.stdout


async def measure(rows: int) -> dict[str, object]:
    base = Settings.from_env()
    name = f"opsmantik_archive_{secrets.token_hex(4)}"
    url = base.database_url.rsplit("/", 1)[0] + "/" + name
    admin = await asyncpg.connect(base.database_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        conn = await asyncpg.connect(url)
        try:
            await migrate(conn)
            month = datetime.now(UTC).date().replace(day=1)
            for _ in range(3):
                month = previous_month(month)
            await conn.fetchval("SELECT ledger_ensure_partition($1)", month)
            site = (await sites.create_site(conn, "archive")).site_id
            await conn.execute(ROWS_SQL, site, rows, month)
            await conn.execute(
                "INSERT INTO site_usage_monthly (site_id, month, events, quantity)"
                " VALUES ($1, $2, $3::bigint, $3::bigint)",
                site,
                month,
                rows,
            )
            await conn.execute("VACUUM (ANALYZE) ingest_idempotency")
            part = "ingest_idempotency_p" + month.strftime("%Y_%m")
            size = await conn.fetchval("SELECT pg_total_relation_size(to_regclass($1))", part)
        finally:
            await conn.close()
        label = month.strftime("%Y-%m")
        close_s, _ = run(url, "billing", "close", "--month", label, "--json")
        with tempfile.TemporaryDirectory() as dest:
            archive_s, out = run(url, "archive", "--month", label, "--to", dest, "--json")
        result = json.loads(out)
        return {
            **result,
            "close_s": round(close_s, 1),
            "archive_s": round(archive_s, 1),
            "rows_per_s": round(rows / archive_s),
            "postgres_bytes_per_row": round(size / rows, 1),
            "extrapolated_10M_s": round(archive_s * 10_000_000 / rows),
        }
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


def main(argv: list[str]) -> int:
    print(json.dumps(asyncio.run(measure(int(argv[0]) if argv else 200_000)), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
