"""`opsmantik archive --month YYYY-MM [--to DIR_OR_URL]`: a closed ledger month leaves Postgres.

Refused unless the month is closed and past the acceptance window (its end + 35 days + 5 min: no
event of the month can still be accepted), every billing month its rows are billed in is closed
and every (site, billing month) they touch has its statement. Then:

1. the month's partition is written to `ledger-YYYY-MM.parquet` (pyarrow, zstd) in the archive's
   order (site_id, then event_id bytewise), each row with `row_sha256`, the SHA-256 of its canonical
   bytes (services/opsmantik/billing/canonical.py); `ledger-YYYY-MM.manifest.json` beside it holds
   the row count, the file's SHA-256 and the statements (site, billing month, sha256) it is part of;
2. the file is read back and verified: every row against its row_sha256, and every statement it
   touches recomputed from the file plus what stays in Postgres (other months' late rows, voids)
   and must equal the SHA-256 `billing close` recorded;
3. in one transaction under the close lock: the archive is recorded in ledger_archives, the
   partition detached and dropped.

The location is a directory or any fsspec URL (s3://, gs://, memory://...). Afterwards the dispute
export, `billing close`'s digest and hence `billing verify` read the month from the file
(`archived_rows`, used by opsmantik.billing.entries), checking each row it reads: a changed row is
refused, named by its position and event_id, and a file whose bytes differ from the recorded
SHA-256 is refused before it is read.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import asyncpg
import fsspec
import pyarrow.parquet as pq

from opsmantik.billing.archive_files import (
    SCHEMA,
    ArchiveTampered,
    file_sha256,
    join,
    manifest_name,
    parquet_name,
    records_table,
    with_row_sha,
)
from opsmantik.billing.canonical import Digest
from opsmantik.billing.canonical_batch import PropertiesText
from opsmantik.billing.entries import entries
from opsmantik.config import Settings
from opsmantik.db.partitions import MAX_AGE, MAX_AHEAD
from opsmantik.db.queries import package_queries
from opsmantik.errors import Refused
from opsmantik.months import label, month_end

Q = package_queries("opsmantik.billing", "archive.sql")
FORMAT = "opsmantik.ledger-archive.v1"
ROW_GROUP = 65536


Emit = Callable[[str], None]  # a progress line; the CLI prints it on stderr


def quiet(_line: str) -> None:
    """No progress lines (a caller that is not the CLI)."""


class Progress:
    """Rows done so far, handed to `emit` at most every `every_s` (a month's archive takes minutes)."""

    def __init__(self, what: str, emit: Emit, every_s: float = 5.0) -> None:
        self.what, self.emit, self.every_s, self.done = what, emit, every_s, 0
        self._start = self._last = time.monotonic()

    def add(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._last = now
            rate = self.done / (now - self._start)
            self.emit(f"archive: {self.what} {self.done:,} rows ({rate:,.0f} rows/s)")


class ArchiveRefused(Refused):
    """The month cannot be archived (yet): exit 2."""


def earliest_archive(month: date) -> datetime:
    return month_end(month) + MAX_AGE + MAX_AHEAD


@dataclass
class Plan:
    month: date
    location: str
    statements: list[tuple[uuid.UUID, date, str]]  # (site, billing month, recorded sha256)
    totals: list[dict[str, Any]]  # per (site, billing month): what reconcile adds for the archive


async def plan(conn: asyncpg.Connection, month: date, location: str, now: datetime) -> Plan:
    if await conn.fetchrow(Q["archive_of"], month):
        raise ArchiveRefused(f"{label(month)} is already archived")
    if not await conn.fetchval(Q["is_closed"], month):
        raise ArchiveRefused(
            f"{label(month)} is not closed: run `opsmantik billing close --month {label(month)}`"
        )
    earliest = earliest_archive(month)
    if now < earliest:
        raise ArchiveRefused(
            f"{label(month)} can still receive events until {earliest.isoformat()} "
            "(its end + 35 days + 5 min, the gateway's acceptance window)"
        )
    part = "ingest_idempotency_p" + month.strftime("%Y_%m")
    if await conn.fetchval("SELECT to_regclass($1)", part) is None:
        raise ArchiveRefused(f"{label(month)} has no ledger partition")
    open_months = [r[0] for r in await conn.fetch(Q["open_billing_months"], month)]
    if open_months:
        raise ArchiveRefused(
            f"rows of {label(month)} are billed in {label(open_months[0])}, which is not closed"
        )
    missing = await conn.fetch(Q["missing_statements"], month)
    if missing:
        s, m = missing[0]
        raise ArchiveRefused(f"site {s} has no statement for {label(m)}: run `opsmantik billing close`")
    statements, totals = [], []
    for r in await conn.fetch(Q["billed_months"], month):
        sha = await conn.fetchval(Q["statement_sha"], r["site_id"], r["billing_month"])
        statements.append((r["site_id"], r["billing_month"], sha))
        totals.append(
            {
                "site_id": str(r["site_id"]),
                "billing_month": label(r["billing_month"]),
                **{k: int(r[k]) for k in ("events", "quantity", "overlimit_events", "overlimit_quantity")},
            }
        )
    return Plan(month, location, statements, totals)


async def write_parquet(conn: asyncpg.Connection, month: date, url: str, emit: Emit = quiet) -> int:
    """The partition to Parquet, a row group at a time, each row with its row_sha256."""
    rows, properties = 0, PropertiesText()
    with fsspec.open(url, "wb") as f:
        writer = pq.ParquetWriter(f, SCHEMA, compression="zstd")
        try:
            async with conn.transaction(isolation="repeatable_read"):
                cursor = await conn.cursor(Q["partition_rows"], month)
                progress = Progress(f"{label(month)} written:", emit)
                while records := await cursor.fetch(ROW_GROUP):
                    writer.write_table(with_row_sha(records_table(records), properties))
                    rows += len(records)
                    progress.add(len(records))
            if rows == 0:
                writer.write_table(SCHEMA.empty_table())
        finally:
            writer.close()
    return rows


async def statement_digest(
    conn: asyncpg.Connection,
    site_id: uuid.UUID,
    billing_month: date,
    extra: list[tuple[date, str, str]],
    emit: Emit = quiet,
) -> str:
    """A statement recomputed from Postgres plus archives (and `extra` files not recorded yet)."""
    digest, progress = Digest(), Progress(f"site {site_id} {label(billing_month)} verified:", emit)
    async with conn.transaction(isolation="repeatable_read"):
        async for obj, body in entries(conn, site_id, billing_month, extra_archives=extra, batched=True):
            digest.add(obj, body)
            progress.add(1)
    return digest.hexdigest()


async def archive_month(
    conn: asyncpg.Connection, month: date, location: str, emit: Emit = quiet
) -> dict[str, Any]:
    t0 = time.monotonic()
    p = await plan(conn, month, location, datetime.now(UTC))
    url = join(location, parquet_name(month))
    rows = await write_parquet(conn, month, url, emit)
    written_s = time.monotonic() - t0
    sha = file_sha256(url)
    manifest = {
        "format": FORMAT,
        "month": label(month),
        "rows": rows,
        "file": parquet_name(month),
        "file_sha256": sha,
        "statements": [
            {"site_id": str(s), "billing_month": label(m), "sha256": h} for s, m, h in p.statements
        ],
        "totals": p.totals,
        "archived_at": datetime.now(UTC).isoformat(),
    }
    with fsspec.open(join(location, manifest_name(month)), "w") as f:
        f.write(json.dumps(manifest, indent=1, sort_keys=True))
    # verify: every statement recomputed from the file + what stays in Postgres; reading them reads
    # every row of the file once (each checked against its row_sha256) and must count every row
    for s, m, h in p.statements:
        got = await statement_digest(conn, s, m, [(month, url, sha)], emit)
        if got != h:
            raise ArchiveTampered(f"site {s} {label(m)}: the archive gives sha256 {got}, the statement {h}")
    checked = sum(int(t["events"]) for t in p.totals)
    if checked != rows or not p.statements and rows:
        raise ArchiveTampered(f"{url}: {rows} rows written, the statements cover {checked}")
    verified_s = time.monotonic() - t0 - written_s
    part = "ingest_idempotency_p" + month.strftime("%Y_%m")
    async with conn.transaction():
        await conn.execute(Q["close_lock"])
        await conn.execute(Q["record_archive"], month, location, rows, sha, json.dumps(manifest))
        await conn.execute(f'ALTER TABLE ingest_idempotency DETACH PARTITION "{part}"')
        await conn.execute(f'DROP TABLE "{part}"')
    with fsspec.open(url, "rb") as f:
        size = f.size if hasattr(f, "size") and f.size else len(f.read())
    return {
        "month": label(month),
        "location": location,
        "file": url,
        "rows": rows,
        "file_sha256": sha,
        "bytes": size,
        "bytes_per_row": round(size / rows, 2) if rows else None,
        "statements_verified": len(p.statements),
        "write_s": round(written_s, 3),
        "verify_s": round(verified_s, 3),
        "partition_dropped": part,
    }


async def archive_now(settings: Settings, month: date, location: str, emit: Emit = quiet) -> dict[str, Any]:
    """Connect and archive `month` to `location`: what was written and verified (the CLI's --json)."""
    conn = await asyncpg.connect(settings.database_url)
    try:
        return await archive_month(conn, month, location, emit)
    finally:
        await conn.close()
