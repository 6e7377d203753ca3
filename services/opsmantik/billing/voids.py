"""`opsmantik events void SITE_ID EVENT_ID --reason TEXT` (or `--file FILE`, one event_id a line).

A void is an append-only entry (who, when, why) in billing_voids, written in one transaction with
its invoice change, under the close lock (shared) like a worker batch:
- billed in an open month: the event comes off that month's invoice (booked_month = billed_month);
- billed in a closed month: a negative adjustment in the first open month after it.
The ledger row stays, so an event_id re-sent after its void is a duplicate and is not billed
again. A second void of the same event and a void of an unknown event are refused (an event_id
not in Postgres may be in an archived month of the site, `opsmantik archive`: the refusal names
those months; they are closed and final, their rows are not voided); a file is all or nothing
(every problem is listed, nothing is voided).
"""

from __future__ import annotations

import getpass
import sys
import uuid
from dataclasses import dataclass
from datetime import date, datetime

import asyncpg

from opsmantik.alerts import crossings
from opsmantik.billing.connect import connect
from opsmantik.billing.entries import Q
from opsmantik.billing.rules import billing_month
from opsmantik.config import Settings
from opsmantik.db import site_locks
from opsmantik.errors import CheckFailed
from opsmantik.meters import voids as meter_voids
from opsmantik.months import label


@dataclass(frozen=True)
class Voided:
    event_id: str
    billed_month: date
    booked_month: date
    quantity: int
    voided_at: datetime

    @property
    def adjustment(self) -> bool:
        return self.booked_month != self.billed_month


class VoidRefused(CheckFailed):
    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


def not_found(site_id: uuid.UUID, event_id: str, archived: list[date]) -> str:
    """Why an event_id not in Postgres's ledger cannot be voided: unknown, or perhaps archived."""
    if not archived:
        return f"{event_id}: no such event for site {site_id} (nothing to void)"
    months = ", ".join(label(m) for m in archived)
    return (
        f"{event_id}: not in the ledger in Postgres; it may be in archived month"
        f"{'s' if len(archived) > 1 else ''} {months} (site {site_id} has rows in its Parquet archive, "
        "`opsmantik archive`): voids of archived months are not supported (the month is closed and final)"
    )


async def void_events(
    conn: asyncpg.Connection, site_id: uuid.UUID, event_ids: list[str], reason: str, voided_by: str
) -> list[Voided]:
    """Void every event or none (VoidRefused lists every problem)."""
    problems: list[str] = []
    if not reason.strip():
        problems.append("--reason must not be empty")
    if len(set(event_ids)) != len(event_ids):
        problems.append("an event_id is listed twice")
    if not event_ids:
        problems.append("no event_id given")
    if problems:
        raise VoidRefused(problems)
    done: list[Voided] = []
    archived: list[date] | None = None  # the site's archived months, read at the first unknown event
    async with conn.transaction():
        await conn.execute(Q["close_lock_shared"])  # a close waits for us; we never book into it
        await site_locks.lock_sites(conn, [site_id])  # the site's meters: no worker batch meanwhile
        for event_id in event_ids:
            entry = await conn.fetchrow(Q["ledger_entry"], site_id, event_id)
            if entry is None:
                if archived is None:
                    archived = [r["month"] for r in await conn.fetch(Q["site_archived_months"], site_id)]
                problems.append(not_found(site_id, event_id, archived))
                continue
            closed = frozenset(
                r["month"] for r in await conn.fetch(Q["closed_months_from"], entry["billing_month"])
            )
            booked = billing_month(entry["billing_month"], closed)
            voided_at = await conn.fetchval(
                Q["insert_void"],
                site_id,
                event_id,
                entry["billing_month"],
                booked,
                entry["quantity"],
                entry["billing_class"],
                reason,
                voided_by,
            )
            if voided_at is None:
                prior = await conn.fetchrow(Q["existing_void"], site_id, event_id)
                problems.append(
                    f"{event_id}: already voided at {prior['voided_at'].isoformat()} by "
                    f"{prior['voided_by']} ({prior['reason']!r}); a void cannot be repeated"
                )
                continue
            over = entry["billing_class"] == "overlimit"
            await conn.execute(
                Q["book_void"],
                site_id,
                booked,
                entry["quantity"],
                int(over),
                entry["quantity"] if over else 0,
            )
            await meter_voids.apply_void(conn, site_id, event_id)  # docs/meters.md "Voids"
            done.append(Voided(event_id, entry["billing_month"], booked, int(entry["quantity"]), voided_at))
        if problems:
            raise VoidRefused(problems)  # rolls the whole transaction back
        # usage back under a line fires usage.threshold.resolved (docs/alerts.md)
        await crossings.decide(conn, {(site_id, v.booked_month) for v in done}, None, recompute=True)
    return done


def login_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def read_ids(path: str) -> list[str]:
    text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()  # noqa: SIM115
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


async def void_now(
    settings: Settings, site_id: uuid.UUID, ids: list[str], reason: str, voided_by: str
) -> list[Voided]:
    """Connect and void `ids` (all or nothing: VoidRefused lists every problem)."""
    conn = await connect(settings)
    try:
        return await void_events(conn, site_id, ids, reason, voided_by)
    finally:
        await conn.close()
