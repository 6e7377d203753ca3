"""The site lock: what a worker batch, a void and a meter compaction take before writing a site's
ledger-derived rows (meter buckets, cross-month dedupe), so none of them interleave on one site.

Sites are hashed into SITE_LOCK_BUCKETS transaction-scoped advisory locks (a bounded number per
batch), always taken in ascending order, so two holders of several sites cannot deadlock.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

import asyncpg

from opsmantik.db.queries import package_queries

Q = package_queries("opsmantik.db", "site_locks.sql")
SITE_LOCK_BUCKETS = 1024


async def lock_sites(conn: asyncpg.Connection, site_ids: Iterable[uuid.UUID]) -> None:
    """Lock the sites' buckets until the transaction ends (ascending order)."""
    buckets = sorted({s.int % SITE_LOCK_BUCKETS for s in site_ids})
    if buckets:
        await conn.execute(Q["lock_buckets"], buckets)
