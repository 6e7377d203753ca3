"""`opsmantik archive` round trip (services/opsmantik/billing/archive.py) on the real Postgres.

A closed month with late rows billed in the next (closed) month is archived to Parquet: the dispute
exports of both billing months are byte-identical before and after (read from Parquet after),
`billing verify` matches the statements, the partition is gone, a changed Parquet row is refused
by name, an event of the archived month is dead-lettered, never billed again.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import asyncpg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from opsmantik import sites
from opsmantik.billing import archive_files as archive
from opsmantik.billing.entries import entries
from opsmantik.billing.export import export_chunks, invoice_and_statement
from opsmantik.billing.reconcile import reconcile_month
from opsmantik.config import Settings
from opsmantik.db import partitions
from opsmantik.months import month_start
from opsmantik.worker.ledger import write_batch
from opsmantik.worker.message import IngestEvent, decode

from tests.support.billing import cli
from tests.support.pipeline import message

pytestmark = pytest.mark.integration

MONTH = date(2025, 3, 1)  # archived
NEXT = date(2025, 4, 1)  # holds March's late rows

SEED = """
INSERT INTO ingest_idempotency (site_id, event_id, event_type, occurred_at, usage_month, billing_month,
    quantity, billing_class, path, received_at, ledgered_at, kafka_partition, kafka_offset, properties)
SELECT $1, $2 || g, 'api_call', $3::timestamptz + g * interval '1 minute',
       date_trunc('month', $3::timestamptz AT TIME ZONE 'UTC')::date, $4::date, 1 + g % 5,
       CASE WHEN g % 4 = 0 THEN 'overlimit' ELSE 'included' END,
       CASE WHEN g % 3 = 0 THEN 'fallback' ELSE 'kafka' END,
       $3::timestamptz + g * interval '1 minute' + interval '3 ms', $3::timestamptz + interval '40 days',
       CASE WHEN g % 3 = 0 THEN NULL ELSE g % 6 END, CASE WHEN g % 3 = 0 THEN NULL ELSE g END,
       CASE WHEN g % 7 = 0 THEN NULL ELSE jsonb_build_object('n', g, 'é', 'ü €', 'x', 2.50) END
FROM generate_series(1, $5::int) AS g
"""
INVOICE = """
INSERT INTO site_usage_monthly (site_id, month, events, quantity, overlimit_events, overlimit_quantity)
SELECT site_id, billing_month, count(*), sum(quantity), count(*) FILTER (WHERE billing_class = 'overlimit'),
       coalesce(sum(quantity) FILTER (WHERE billing_class = 'overlimit'), 0)
FROM ingest_idempotency WHERE site_id = $1 GROUP BY site_id, billing_month
"""


async def export(pool: asyncpg.Pool, site: uuid.UUID, month: date) -> bytes:
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        inv, st = await invoice_and_statement(conn, site, month)
        body = b"".join([c async for c in export_chunks(conn, site, month, "ndjson", inv, st)])
    lines = body.splitlines()
    summary = json.loads(lines[-1])
    summary.pop("generated_at")
    return b"\n".join([*lines[:-1], json.dumps(summary, sort_keys=True).encode()]) + b"\n"


async def reconciled(pool: asyncpg.Pool, site: uuid.UUID) -> list[tuple[date, bool]]:
    out = []
    async with pool.acquire() as conn:
        for m in (MONTH, NEXT):
            mine = [s for s in (await reconcile_month(conn, m)).sites if s.site_id == site]
            assert len(mine) == 1 and mine[0].ledger_events > 0
            out.append((m, mine[0].ok))
    return out


@pytest.fixture(scope="module")
async def seeded(pool: asyncpg.Pool) -> uuid.UUID:
    async with pool.acquire() as conn:
        site = (await sites.create_site(conn, f"arch-{uuid.uuid4().hex[:6]}")).site_id
        for m in (MONTH, NEXT):
            await conn.fetchval("SELECT ledger_ensure_partition($1)", m)
        await conn.execute(SEED, site, "mar-", month_start(MONTH) + timedelta(hours=2), MONTH, 700)
        await conn.execute(SEED, site, "late-", month_start(MONTH) + timedelta(days=30), NEXT, 40)
        await conn.execute(SEED, site, "apr-", month_start(NEXT) + timedelta(hours=2), NEXT, 300)
        await conn.execute(INVOICE, site)
    return site


async def test_archive_refused_before_close_and_for_an_open_window(
    settings: Settings, seeded: uuid.UUID, tmp_path: Path
) -> None:
    r = cli(settings, "archive", "--month", "2025-03", "--to", str(tmp_path))
    assert r.returncode == 2 and "2025-03 is not closed" in r.stderr, r.stderr
    this = partitions.month_of(datetime.now(UTC))
    r = cli(settings, "archive", "--month", this.strftime("%Y-%m"), "--to", str(tmp_path))
    assert r.returncode == 2, r.stderr
    r = cli(settings, "archive", "--month", "2025-3")
    assert r.returncode == 2 and "YYYY-MM" in r.stderr


async def test_batched_entries_equal_row_by_row(pool: asyncpg.Pool, seeded: uuid.UUID) -> None:
    """close and archive encode Postgres rows in Arrow batches, the export row by row: same bytes."""
    for m in (MONTH, NEXT):
        async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
            batched = [body async for _, body in entries(conn, seeded, m, batched=True)]
            one_by_one = [body async for _, body in entries(conn, seeded, m)]
        assert batched == one_by_one and len(batched) == {MONTH: 700, NEXT: 340}[m]


async def test_archive_round_trip_and_tamper(
    settings: Settings, pool: asyncpg.Pool, seeded: uuid.UUID, tmp_path: Path
) -> None:
    site = seeded
    for m in ("2025-03", "2025-04"):
        r = cli(settings, "billing", "close", "--month", m, "--json")
        assert r.returncode == 0, r.stderr
    before = {m: await export(pool, site, m) for m in (MONTH, NEXT)}
    assert await reconciled(pool, site) == [(MONTH, True), (NEXT, True)]
    assert before[MONTH].count(b'"kind":"row"') == 700
    assert before[NEXT].count(b'"kind":"row"') == 340

    dest = tmp_path / "archive"
    dest.mkdir()
    r = cli(settings, "archive", "--month", "2025-03", "--to", str(dest), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["rows"] == 740 and out["statements_verified"] >= 2
    assert await pool.fetchval("SELECT to_regclass('ingest_idempotency_p2025_03')") is None
    assert await pool.fetchval("SELECT count(*) FROM ingest_idempotency WHERE usage_month = $1", MONTH) == 0
    manifest = json.loads((dest / "ledger-2025-03.manifest.json").read_text())
    assert manifest["rows"] == 740 and manifest["file_sha256"] == out["file_sha256"]

    after = {m: await export(pool, site, m) for m in (MONTH, NEXT)}
    # reconcile counts the archived rows from the archive's totals: still 0 drift
    assert await reconciled(pool, site) == [(MONTH, True), (NEXT, True)]
    assert after == before  # the exports, read from Parquet (+ April's own rows), byte for byte
    for m, body in after.items():
        f = tmp_path / f"export-{m}.ndjson"
        f.write_bytes(body)
        r = cli(settings, "billing", "verify", str(f))
        assert r.returncode == 0 and "MATCH" in r.stdout and "statement" in r.stdout, r.stdout

    r = cli(settings, "archive", "--month", "2025-03", "--to", str(dest))
    assert r.returncode == 2 and "already archived" in r.stderr

    # the worker: an event of the archived month is dead-lettered, not billed again
    async with pool.acquire() as conn:
        ev = decode(message(site, "mar-5", occurred_at=month_start(MONTH) + timedelta(minutes=7)), 0, 1)
        assert isinstance(ev, IngestEvent)
        res = await write_batch(conn, "test-archive", "t:1", [ev], [])
        assert (res.new, res.dead_letters) == (0, 1)
        reason = await conn.fetchval(
            "SELECT reason FROM ingest_dead_letter WHERE topic = 'test-archive' AND event_id = 'mar-5'"
        )
        assert reason == "usage month is archived"
        assert await conn.fetchval("SELECT to_regclass('ingest_idempotency_p2025_03')") is None

    # tamper: one quantity changed, the file otherwise intact
    path = dest / "ledger-2025-03.parquet"
    original = path.read_bytes()
    table = pq.read_table(path)
    q = table.column("quantity").to_pylist()
    ids = table.column("event_id").to_pylist()
    q[17] += 1
    pq.write_table(table.set_column(table.schema.get_field_index("quantity"), "quantity", pa.array(q)), path)
    with pytest.raises(archive.ArchiveTampered, match=rf"row 17 \(site {site}, event_id '{ids[17]}'\)"):
        await export(pool, site, MONTH)
    # a row removed and the file rewritten consistently: the bytes differ from the record
    pq.write_table(table.slice(1), path)
    with pytest.raises(archive.ArchiveTampered, match="file sha256 .* != the recorded"):
        await export(pool, site, NEXT)
    path.write_bytes(original)
    assert await export(pool, site, MONTH) == before[MONTH]
