"""The webhook outbox, read and updated by the dispatcher and the CLI (docs/alerts.md "Delivery").

The worker writes rows (opsmantik.alerts.crossings); this module claims due rows (a lease, FOR
UPDATE SKIP LOCKED), records each attempt's outcome with the next delay (exponential backoff with
jitter, parked once the retry window has passed), resends and lists them.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from opsmantik.db.queries import package_queries
from opsmantik.errors import NotFound

Q = package_queries("opsmantik.alerts", "outbox.sql")
STATUSES = ("pending", "delivered", "parked")


@dataclass(frozen=True)
class Claimed:
    webhook_id: str
    rule_id: uuid.UUID
    body: bytes
    attempts: int  # this attempt's number (1 = the first)
    window_start: datetime
    created_at: datetime
    url: str
    secret_salt: bytes


@dataclass(frozen=True)
class Delivery:
    webhook_id: str
    rule_id: uuid.UUID
    site_id: uuid.UUID
    event_type: str
    status: str
    attempts: int
    created_at: datetime
    next_attempt_at: datetime
    last_status: int | None
    last_error: str | None
    delivered_at: datetime | None


@dataclass(frozen=True)
class Queue:
    pending: int
    oldest_s: float
    parked: int


def backoff(attempt: int, base_s: float, cap_s: float, rng: random.Random | None = None) -> float:
    """The delay after failed attempt number `attempt` (1, 2, ...): base·2^(attempt-1) capped,
    with "equal jitter" (half fixed, half random) so receivers recovering from an outage are not
    hit by every dispatcher's retries at once, and a delay never collapses to ~0."""
    step = min(cap_s, base_s * 2.0 ** min(attempt - 1, 60))
    return step / 2 + (rng or random).uniform(0, step / 2)


async def claim(conn: asyncpg.Connection, limit: int, lease_s: float) -> list[Claimed]:
    return [Claimed(*r) for r in await conn.fetch(Q["claim"], limit, lease_s)]


async def delivered(conn: asyncpg.Connection, webhook_id: str, status: int) -> float | None:
    """Mark it delivered; the seconds from the crossing to the delivery (None: not ours anymore)."""
    row = await conn.fetchrow(Q["delivered"], webhook_id, status)
    return None if row is None else (row["delivered_at"] - row["created_at"]).total_seconds()


async def failed(
    conn: asyncpg.Connection,
    webhook_id: str,
    status: int | None,
    error: str,
    delay_s: float,
    retry_for_s: float,
) -> str | None:
    """Record a failed attempt: 'pending' (retried after delay_s) or 'parked'."""
    result: str | None = await conn.fetchval(
        Q["failed"], webhook_id, status, delay_s, retry_for_s, error[:500]
    )
    return result


async def resend(conn: asyncpg.Connection, webhook_id: str) -> None:
    if await conn.fetchval(Q["resend"], webhook_id) is None:
        raise NotFound(f"no webhook {webhook_id} (opsmantik alerts deliveries)")


async def deliveries(
    conn: asyncpg.Connection, site_id: uuid.UUID | None, status: str | None, limit: int
) -> list[Delivery]:
    return [Delivery(*r) for r in await conn.fetch(Q["deliveries"], site_id, status, limit)]


async def queue(conn: asyncpg.Connection) -> Queue:
    row = await conn.fetchrow(Q["queue"])
    return Queue(int(row["pending"]), float(row["oldest_s"]), int(row["parked"]))
