"""Events not (yet) in the ledger that are not drift: outbox rows (pending, parked, older than
24 h: the seed's SLA processes fallback events within 24 h) and dead letters. Shown by
`reconcile` and `slo-report`."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date

import asyncpg

from opsmantik.db.queries import package_queries
from opsmantik.months import month_bounds

Q = package_queries("opsmantik.billing", "backlog.sql")


@dataclass(frozen=True)
class Backlog:
    outbox_pending: int
    outbox_parked: int  # the broker refused them for good: an operator must act
    outbox_older_than_24h: int  # past the SLA
    dead_letters_month: int  # created in the month
    dead_letters_total: int

    @property
    def needs_attention(self) -> bool:
        return self.outbox_parked > 0 or self.outbox_older_than_24h > 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def render(self) -> str:
        return (
            f"outbox: {self.outbox_pending} pending, {self.outbox_parked} parked, "
            f"{self.outbox_older_than_24h} older than 24 h; dead letters: {self.dead_letters_month} "
            f"this month ({self.dead_letters_total} in all)"
        )


async def read_backlog(conn: asyncpg.Connection, month: date) -> Backlog:
    row = await conn.fetchrow(Q["backlog"], *month_bounds(month))
    return Backlog(**dict(row))
