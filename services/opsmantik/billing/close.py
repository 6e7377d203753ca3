"""`opsmantik billing close --month YYYY-MM`: freeze a month's invoice, record its statements.

1. Refused before the month ended plus the grace period (a setting, default 3 days).
2. Under the close lock (exclusive; worker batches and voids take it shared), mark the month
   closed. From that commit on, late events and voids of the month book into the first open month.
3. Per site without a statement yet: read its entries in one snapshot, compute the canonical
   SHA-256 and totals, check them against the invoice row, record the statement.
Idempotent: a second run changes nothing and prints the same statements; a run interrupted
between 2 and 3 is completed by the next.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg

from opsmantik.billing.canonical import Digest
from opsmantik.billing.connect import connect
from opsmantik.billing.entries import Q, entries
from opsmantik.config import Settings
from opsmantik.errors import Refused, Unavailable
from opsmantik.months import label, month_end


class CloseRefused(Refused):
    """The month cannot be closed (yet): exit 2."""


@dataclass(frozen=True)
class SiteDrift:
    site_id: uuid.UUID
    ledger: dict[str, int]
    invoice: dict[str, int]


def earliest_close(month: date, grace_days: float) -> datetime:
    return month_end(month) + timedelta(days=grace_days)


def check_closable(month: date, now: datetime, grace_days: float) -> None:
    earliest = earliest_close(month, grace_days)
    if now < earliest:
        raise CloseRefused(
            f"{label(month)} cannot be closed before {earliest.isoformat()} (the month "
            f"ends {month_end(month).isoformat()}, grace period {grace_days:g} days: "
            "OPSMANTIK_BILLING_CLOSE_GRACE_DAYS)"
        )


async def mark_closed(conn: asyncpg.Connection, month: date, lock_timeout_s: float) -> tuple[datetime, bool]:
    """(closed_at, newly closed). Waits for in-flight worker batches (they hold the lock shared)."""
    async with conn.transaction():
        await conn.execute(f"SET LOCAL lock_timeout = '{int(lock_timeout_s * 1000)}ms'")
        await conn.execute(Q["close_lock_exclusive"])
        closed_at = await conn.fetchval(Q["close_month"], month)
        if closed_at is not None:
            return closed_at, True
        return await conn.fetchval(Q["closed_at"], month), False


async def state_site(
    conn: asyncpg.Connection, site_id: uuid.UUID, month: date, closed_at: datetime
) -> SiteDrift | None:
    """Record one site's statement; a SiteDrift (nothing recorded) when invoice != entries."""
    async with conn.transaction(isolation="repeatable_read"):
        digest = Digest()
        async for obj, body in entries(conn, site_id, month, batched=True):
            digest.add(obj, body)
        t = digest.totals
        inv = await conn.fetchrow(Q["invoice_row"], site_id, month)
        # numeric sums (0004) → exact ints
        invoice = (
            {k: int(v) for k, v in inv.items()}
            if inv is not None
            else dict.fromkeys(("events", "quantity", "overlimit_events", "overlimit_quantity"), 0)
        )
        ledger = {
            "events": t.events,
            "quantity": t.quantity,
            "overlimit_events": t.overlimit_events,
            "overlimit_quantity": t.overlimit_quantity,
        }
        if ledger != invoice:
            return SiteDrift(site_id, ledger, invoice)
        await conn.execute(
            Q["insert_statement"],
            site_id,
            month,
            t.rows,
            t.row_quantity,
            t.late_rows,
            t.voids,
            t.voided_quantity,
            t.events,
            t.quantity,
            t.overlimit_events,
            t.overlimit_quantity,
            digest.hexdigest(),
            closed_at,
        )
    return None


async def close(
    conn: asyncpg.Connection, month: date, now: datetime, settings: Settings
) -> tuple[datetime, bool, list[SiteDrift]]:
    check_closable(month, now, settings.billing_close_grace_days)
    closed_at, new = await mark_closed(conn, month, settings.billing_close_lock_timeout_s)
    drifts = []
    for r in await conn.fetch(Q["sites_to_state"], month):
        drift = await state_site(conn, r["site_id"], month, closed_at)
        if drift is not None:
            drifts.append(drift)
    return closed_at, new, drifts


def _statement(r: asyncpg.Record) -> dict[str, Any]:
    d: dict[str, Any] = {
        k: int(v) if isinstance(v, Decimal) else v for k, v in r.items()
    }  # numeric sums → ints
    d["site_id"], d["month"] = str(d["site_id"]), label(d["month"])
    d["closed_at"] = d["closed_at"].isoformat()
    return d


@dataclass(frozen=True)
class Closed:
    """What `billing close` did: the statements recorded, and the sites that drifted (none recorded)."""

    month: date
    closed_at: datetime
    newly_closed: bool
    statements: list[dict[str, Any]]
    drifts: list[SiteDrift]


class CloseLockBusy(Unavailable):
    """Worker batches held the close lock past the timeout: nothing changed, run it again (exit 3)."""


async def close_month(settings: Settings, month: date) -> Closed:
    """Connect, close `month` now and read back its statements."""
    conn = await connect(settings)
    try:
        try:
            closed_at, new, drifts = await close(conn, month, datetime.now(UTC), settings)
        except asyncpg.LockNotAvailableError:
            raise CloseLockBusy(
                f"worker batches held the close lock longer than "
                f"{settings.billing_close_lock_timeout_s:g} s; nothing changed, run it again"
            ) from None
        statements = [_statement(r) for r in await conn.fetch(Q["statements"], month)]
    finally:
        await conn.close()
    return Closed(month, closed_at, new, statements, drifts)
