"""A site's ledger entries for a billing month, in canonical order, read through a cursor.

Shared by the close (the statement's digest) and the dispute export (the lines it streams), so
both see the same entries in the same order. Call inside a transaction (cursors need one).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import date
from typing import Any

import asyncpg

from opsmantik.billing import archive_files as archive
from opsmantik.billing.canonical import row_object, void_object
from opsmantik.db.queries import package_queries

Q = package_queries("opsmantik.billing", "billing.sql")
PREFETCH = 1000


async def entries(
    conn: asyncpg.Connection,
    site_id: uuid.UUID,
    month: date,
    extra_archives: list[tuple[date, str, str]] | None = None,
) -> AsyncIterator[dict[str, Any]]:
    """The rows billed in `month` by event_id, then the void entries booked in it by event_id.

    Rows of archived usage months (`opsmantik archive`, services/opsmantik/billing/archive.py) are
    read from their Parquet file, each checked against its row_sha256, and merged in canonical
    order. `extra_archives` (month, url, sha256): files being archived whose partition is still in
    Postgres; their month is read from the file only.
    """
    months = [
        (r["month"], r["location"], r["file_sha256"]) for r in await archive.archived_months(conn, month)
    ]
    files = [(m, archive.join(loc, archive.parquet_name(m)), sha) for m, loc, sha in months]
    files += extra_archives or []
    if not files:
        async for r in conn.cursor(Q["site_rows"], site_id, month, prefetch=PREFETCH):
            yield row_object(r)
    else:
        skip = {m for m, _, _ in files}
        rows = await asyncio.to_thread(archive.archived_rows, [(u, h) for _, u, h in files], site_id, month)
        from_files = iter(rows)
        pending = next(from_files, None)
        async for r in conn.cursor(Q["site_rows"], site_id, month, prefetch=PREFETCH):
            if r["usage_month"] in skip:
                continue
            while pending is not None and pending["event_id"].encode() < r["event_id"].encode():
                yield row_object(pending)
                pending = next(from_files, None)
            yield row_object(r)
        while pending is not None:
            yield row_object(pending)
            pending = next(from_files, None)
    async for r in conn.cursor(Q["site_voids"], site_id, month, prefetch=PREFETCH):
        yield void_object(r)
