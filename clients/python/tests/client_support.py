"""Shared pieces of the producer-client tests (the pipeline, gateway included, is
tests/support/pipeline.py's): sites, events numbered in `properties.seq`, and the ledger check
that every number is there exactly once."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
from opsmantik.db.queries import load_queries
from opsmantik.sites import create_site_with_key

from tests.support.process import free_port

__all__ = ["free_port"]  # re-exported for the client tests

Q = load_queries(Path(__file__).with_name("client.sql"))


async def new_site(pool: asyncpg.Pool) -> tuple[uuid.UUID, str]:
    async with pool.acquire() as conn:
        key = await create_site_with_key(
            conn, f"client-{uuid.uuid4().hex[:8]}", rate=100_000.0, burst=100_000
        )
    return key.site_id, key.api_key


def numbered(start: int, stop: int) -> list[dict]:
    """Events without an event_id (the client assigns one), numbered in properties.seq."""
    at = (datetime.now(UTC) - timedelta(seconds=5)).isoformat()
    return [{"type": "api_call", "occurred_at": at, "properties": {"seq": i}} for i in range(start, stop)]


@dataclass(frozen=True)
class LedgerCount:
    rows: int
    distinct_seq: int
    min_seq: int | None
    max_seq: int | None

    def exactly_once(self, n: int) -> bool:
        return (self.rows, self.distinct_seq, self.min_seq, self.max_seq) == (n, n, 0, n - 1)


async def ledger_by_seq(pool: asyncpg.Pool, site: uuid.UUID) -> LedgerCount:
    row = await pool.fetchrow(Q["ledger_by_seq"], site)
    return LedgerCount(row["rows"], row["distinct_seq"], row["min_seq"], row["max_seq"])


async def wait_ledger(pool: asyncpg.Pool, site: uuid.UUID, n: int, timeout_s: float = 90.0) -> LedgerCount:
    """Until the ledger holds n rows for the site (or the time is up); then its count."""
    deadline = time.monotonic() + timeout_s
    while True:
        count = await ledger_by_seq(pool, site)
        if count.rows >= n or time.monotonic() > deadline:
            await asyncio.sleep(1.0)  # a duplicate would arrive after the n-th row: give it time
            return await ledger_by_seq(pool, site)
        await asyncio.sleep(0.2)


async def ledger_event_ids(pool: asyncpg.Pool, site: uuid.UUID) -> set[str]:
    rows = await pool.fetch(Q["ledger_event_ids"], site)
    return {r["event_id"] for r in rows}
