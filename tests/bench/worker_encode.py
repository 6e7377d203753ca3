"""The worker's batch encoding, measured alone (issue 35; docs/results/2026-12-07-second-worker-cost.md).

`python -m tests.bench.worker_encode [--rows N] [--times K]` on the running local stack's
Postgres (`opsmantik stack up`), in a scratch database of its own (created, migrated, dropped).
Prints, per row, the client's CPU (this process) and the server's (the backend's utime + stime
from /proc: the stack's Postgres runs on this machine) of:

- the insert's parameters as the worker sent them before issue 35: fourteen arrays, unnested
  (`SELECT count(*) FROM unnest(…)`: encoding and decoding only, no insert);
- the batch's binary COPY into ledger.sql's batch table (the IngestEvents themselves as records);
- one column by binary COPY: timestamptz, int8, text, date (what a value of each type costs).

`--ledger`: instead, the worker's CPU per event of decode + ledger.write_batch (the whole
transaction: ledger, invoice, the built-in meters, freshness) on bench-shaped messages (load.lua's:
100 events a request sharing received_at, its properties), batches of --rows; PYTHONPATH at
another checkout's services/ measures that checkout (the before/after of issue 35).

Each step is one transaction per batch, as the worker's: the server's figure includes the
transaction and, for the temporary tables, their truncation at COMMIT (ON COMMIT DELETE ROWS).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import orjson
from asyncpg.pgproto.pgproto import UUID as PgUUID
from opsmantik import sites
from opsmantik.config import Settings
from opsmantik.db.migrate import migrate
from opsmantik.worker import ledger
from opsmantik.worker.message import IngestEvent, decode

ARRAYS = (
    "SELECT count(*) FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::date[],"
    " $6::date[], $7::bigint[], $8::bool[], $9::text[], $10::timestamptz[], $11::int[], $12::bigint[],"
    " $13::text[], $14::text[])"
)


def backend_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(
    conn: asyncpg.Connection, name: str, rows: int, times: int, step: Callable[[], Awaitable[object]]
) -> None:
    pid = conn.get_server_pid()
    for _ in range(3):
        await step()
    server, client = backend_cpu(pid), time.process_time()
    for _ in range(times):
        await step()
    server, client = backend_cpu(pid) - server, time.process_time() - client
    per = times * rows
    print(f"{name:42s} client {client / per * 1e6:6.2f} µs/row   server {server / per * 1e6:6.2f} µs/row")


async def run(rows: int, times: int, whole: bool) -> None:
    base = Settings.from_env().database_url
    db = f"bench_encode_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(base)
    await admin.execute(f'CREATE DATABASE "{db}"')
    try:
        conn = await asyncpg.connect(base.rsplit("/", 1)[0] + "/" + db)
        try:
            await migrate(conn)
            await (ledger_cost if whole else steps)(conn, rows, times)
        finally:
            await conn.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        await admin.close()


async def ledger_cost(conn: asyncpg.Connection, rows: int, times: int) -> None:
    site = (await sites.create_site(conn, f"encode-{uuid.uuid4().hex[:6]}")).site_id
    now = datetime.now(UTC)
    occurred = (now - timedelta(seconds=30)).replace(microsecond=0)

    def message(i: int) -> bytes:
        return orjson.dumps(
            {
                "v": 1,
                "site_id": str(site),
                "event_id": f"bench-1-{i}",
                "type": "page_view",
                "occurred_at": occurred.isoformat(timespec="microseconds"),
                "usage_month": occurred.date().replace(day=1).isoformat(),
                "quantity": 1,
                "received_at": (now + timedelta(milliseconds=i // 100)).isoformat(timespec="microseconds"),
                "path": "kafka",
                "gateway_status": "accepted",
                "properties": {"path": "/pricing", "plan": "pro", "ref": "bench"},
            }
        )

    batches = [[(message(b * rows + i), b % 4, b * rows + i) for i in range(rows)] for b in range(times + 3)]
    client = 0.0
    for n, batch in enumerate(batches):
        if n == 3:  # three batches of warm-up
            client = time.process_time()
        decoded = [decode(v, p, o) for v, p, o in batch]
        events = [d for d in decoded if isinstance(d, IngestEvent)]
        await ledger.write_batch(conn, "t", "t:1", events, [])
    per = (time.process_time() - client) / (times * rows)
    print(f"{ledger.__file__}: decode + write_batch {per * 1e6:.2f} µs/event, {times} batches of {rows}")


async def steps(conn: asyncpg.Connection, rows: int, times: int) -> None:
    site = PgUUID(uuid.uuid4().bytes)
    now = datetime.now(UTC)
    month = now.date().replace(day=1)
    us = (now - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    events = [
        IngestEvent(
            site,
            f"bench-1-{i}",
            "page_view",
            us,
            month,
            1,
            '{"a": 1}',
            us,
            "kafka",
            0,
            i,
            None,
            b"",
            (site, f"bench-1-{i}"),
            now,
            now,
        )
        for i in range(rows)
    ]
    arrays = [
        [e.site_id for e in events],
        [e.event_id for e in events],
        [e.type for e in events],
        [e.occurred_at for e in events],
        [e.usage_month for e in events],
        [e.usage_month for e in events],
        [e.quantity for e in events],
        [False for _ in events],
        [e.path for e in events],
        [e.received_at for e in events],
        [e.partition for e in events],
        [e.offset for e in events],
        [e.properties for e in events],
        [e.subject for e in events],
    ]
    await conn.execute(ledger.Q["batch_table"])

    async def old_arrays() -> None:
        async with conn.transaction():
            await conn.fetchval(ARRAYS, *arrays)

    async def copy_batch() -> None:
        async with conn.transaction():
            await conn.copy_records_to_table(ledger.BATCH_TABLE, records=events, columns=ledger.BATCH_COLUMNS)

    await measure(conn, "fourteen arrays, unnested (before issue 35)", rows, times, old_arrays)
    await measure(conn, "COPY into the batch table", rows, times, copy_batch)
    for column, values in (
        ("timestamptz", [(now + timedelta(microseconds=i),) for i in range(rows)]),
        ("bigint", [(i,) for i in range(rows)]),
        ("text", [(f"bench-1-{i}",) for i in range(rows)]),
        ("date", [(month,) for _ in range(rows)]),
    ):
        await conn.execute(f"CREATE TEMP TABLE one_{column} (v {column}) ON COMMIT DELETE ROWS")

        async def copy_one(column: str = column, values: list[tuple[object]] = values) -> None:
            async with conn.transaction():
                await conn.copy_records_to_table(f"one_{column}", records=values)

        await measure(conn, f"COPY of one {column} column", rows, times, copy_one)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2000, help="rows per batch (the worker's batch)")
    parser.add_argument("--times", type=int, default=50, help="batches measured")
    parser.add_argument("--ledger", action="store_true", help="decode + write_batch per event instead")
    args = parser.parse_args()
    asyncio.run(run(args.rows, args.times, args.ledger))


if __name__ == "__main__":
    main()
