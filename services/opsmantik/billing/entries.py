"""A site's ledger entries for a billing month, in canonical order, read through a cursor.

Shared by the close (the statement's digest) and the dispute export (the lines it streams), so
both see the same entries in the same order. Call inside a transaction (cursors need one).
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from datetime import date
from typing import Any

import asyncpg

from opsmantik.billing import archive_files as archive
from opsmantik.billing.canonical import canonical, row_object, void_object
from opsmantik.db.queries import package_queries

Q = package_queries("opsmantik.billing", "billing.sql")
PREFETCH = 1000


Entry = tuple[dict[str, Any], bytes]  # (canonical object, its canonical bytes)


async def _pulled(rows: Iterator[Entry], n: int = 4096) -> AsyncIterator[Entry]:
    """A blocking iterator (Parquet reads) drained n at a time off the event loop."""
    while batch := await asyncio.to_thread(lambda: list(itertools.islice(rows, n))):
        for entry in batch:
            yield entry


def _from_row(r: Mapping[str, Any]) -> Entry:
    obj = row_object(r)
    return obj, canonical(obj)


async def entries(
    conn: asyncpg.Connection,
    site_id: uuid.UUID,
    month: date,
    extra_archives: list[tuple[date, str, str]] | None = None,
) -> AsyncIterator[Entry]:
    """The rows billed in `month` by event_id, then the void entries booked in it by event_id.

    Rows of archived usage months (`opsmantik archive`, services/opsmantik/billing/archive.py) are
    read from their Parquet file, each checked against its row_sha256, and merged in canonical
    order (Python's str order is UTF-8's bytewise order, the SQL's COLLATE "C"). `extra_archives`
    (month, url, sha256): files being archived whose partition is still in Postgres; their month is
    read from the file only.
    """
    months = [
        (r["month"], r["location"], r["file_sha256"]) for r in await archive.archived_months(conn, month)
    ]
    files = [(m, archive.join(loc, archive.parquet_name(m)), sha) for m, loc, sha in months]
    files += extra_archives or []
    if not files:
        async for r in conn.cursor(Q["site_rows"], site_id, month, prefetch=PREFETCH):
            yield _from_row(r)
    else:
        archived = {m for m, _, _ in files}
        # the month's own rows come from its file: read only the late rows of other months
        query = Q["site_late_rows"] if month in archived else Q["site_rows"]
        from_files = _pulled(archive.archived_entries([(u, h) for _, u, h in files], site_id, month))
        pending = await anext(from_files, None)
        async for r in conn.cursor(query, site_id, month, prefetch=PREFETCH):
            if r["usage_month"] in archived:
                continue
            while pending is not None and pending[0]["event_id"] < r["event_id"]:
                yield row_object(pending[0]), pending[1]
                pending = await anext(from_files, None)
            yield _from_row(r)
        while pending is not None:
            yield row_object(pending[0]), pending[1]
            pending = await anext(from_files, None)
    async for r in conn.cursor(Q["site_voids"], site_id, month, prefetch=PREFETCH):
        obj = void_object(r)
        yield obj, canonical(obj)
