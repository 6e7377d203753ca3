"""Monthly usage per site from a cache the gateway refreshes in the background.

The quota is business, counted in events per usage month. The gateway only approximates it (the
worker decides the billing class exactly, event by event): an event is `overlimit` when cached
usage plus its position among the batch's events of that month passes the soft quota, and a
request is refused (429 quota_exceeded) once cached usage has reached the hard cap. Usage is
counted in the month the worker books the event into: its usage month, or the first open month
when that one is closed (a late event; services/opsmantik/billing/rules.py). When the cache is older than
`stale_s` (or was never loaded) the check fails open: `degraded`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date

import asyncpg

from opsmantik.billing.rules import billing_month
from opsmantik.events import Event
from opsmantik.gateway.auth import SiteAuth
from opsmantik.gateway.sql import Q
from opsmantik.months import previous_month

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QuotaCheck:
    statuses: list[str]  # per event: accepted / overlimit / degraded
    exceeded_month: date | None  # set → 429 quota_exceeded


@dataclass
class UsageCache:
    stale_s: float
    clock: Callable[[], float] = time.monotonic
    usage: dict[tuple[uuid.UUID, date], int] = field(default_factory=dict)
    closed: frozenset[date] = frozenset()  # closed months (from the previous month on)
    loaded_at: float | None = None

    def age_s(self) -> float | None:
        return None if self.loaded_at is None else self.clock() - self.loaded_at

    def is_stale(self) -> bool:
        age = self.age_s()
        return age is None or age > self.stale_s

    def load(
        self, rows: Sequence[tuple[uuid.UUID, date, int]], closed: frozenset[date] = frozenset()
    ) -> None:
        self.usage = {(site, month): events for site, month, events in rows}
        self.closed = closed
        self.loaded_at = self.clock()

    def booked_month(self, usage_month: date) -> date:
        """The month the worker books an event of `usage_month` into."""
        return billing_month(usage_month, self.closed) if self.closed else usage_month

    def check(self, site: SiteAuth, events: Sequence[Event]) -> QuotaCheck:
        if site.monthly_quota is None and site.hard_cap is None:
            return QuotaCheck(["accepted"] * len(events), None)  # nothing to check
        if self.is_stale():
            return QuotaCheck(["degraded"] * len(events), None)
        booked = [self.booked_month(e.usage_month) for e in events]
        if site.hard_cap is not None:
            for month in sorted(set(booked)):
                if self.usage.get((site.site_id, month), 0) >= site.hard_cap:
                    return QuotaCheck([], month)
        statuses: list[str] = []
        seen: Counter[date] = Counter()
        for month in booked:
            seen[month] += 1
            used = self.usage.get((site.site_id, month), 0) + seen[month]
            over = site.monthly_quota is not None and used > site.monthly_quota
            statuses.append("overlimit" if over else "accepted")
        return QuotaCheck(statuses, None)

    async def refresh(self, pool: asyncpg.Pool, today: date, timeout_s: float = 2.0) -> None:
        # Events may be 35 days old: this month and the previous one cover every valid event.
        async with pool.acquire(timeout=timeout_s) as conn:
            rows = await conn.fetch(Q["usage_since"], previous_month(today), timeout=timeout_s)
            closed = await conn.fetch(Q["closed_since"], previous_month(today), timeout=timeout_s)
        self.load(
            [(r["site_id"], r["month"], r["events"]) for r in rows], frozenset(r["month"] for r in closed)
        )

    async def run(self, pool: asyncpg.Pool, interval_s: float, today: Callable[[], date]) -> None:
        while True:
            try:
                await self.refresh(pool, today())
            except Exception as exc:  # noqa: BLE001 - stale cache → degraded, never an error
                log.warning("usage cache refresh failed (age %s s): %s", self.age_s(), type(exc).__name__)
            await asyncio.sleep(interval_s)
