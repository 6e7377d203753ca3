"""A site's ledger entries for a billing month, in canonical order, read through a cursor.

Shared by the close (the statement's digest) and the dispute export (the lines it streams), so
both see the same entries in the same order. Call inside a transaction (cursors need one).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import date
from typing import Any

import asyncpg

from opsmantik.billing.canonical import row_object, void_object
from opsmantik.db.queries import package_queries

Q = package_queries("opsmantik.billing", "billing.sql")
PREFETCH = 1000


async def entries(conn: asyncpg.Connection, site_id: uuid.UUID, month: date) -> AsyncIterator[dict[str, Any]]:
    """The rows billed in `month` by event_id, then the void entries booked in it by event_id."""
    async for r in conn.cursor(Q["site_rows"], site_id, month, prefetch=PREFETCH):
        yield row_object(r)
    async for r in conn.cursor(Q["site_voids"], site_id, month, prefetch=PREFETCH):
        yield void_object(r)
