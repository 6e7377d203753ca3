"""Monthly usage per site from a cache the gateway refreshes in the background.

The quota is business, counted in events per usage month. The gateway only approximates it (the
worker decides the billing class exactly, event by event): an event is `overlimit` when cached
usage plus its position among the batch's events of that month passes the soft quota, and a
request is refused (429 quota_exceeded) once cached usage has reached the hard cap. Usage is
counted in the month the worker books the event into: its usage month, or the first open month
when that one is closed (a late event; services/opsmantik/billing/rules.py). When the cache is older than
`stale_s` (or was never loaded) the check fails open: `degraded`.

The cache holds the active sites only, so its cost follows the tenants that send traffic, not the
number of sites in the database (100,000 sites re-read every second cost an idle gateway 63 % of a
core: docs/benchmarks.md). A site enters on its first request that has a limit to check: that
request waits for one primary-key read of the site's usage (`load_site`), so the first check is
as exact as every later one. From then on each refresh re-reads the site with the others; a site
with no such request for `ACTIVE_FOR_S` leaves the cache and is read again on its next request.
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
from typing import NamedTuple

import asyncpg

from opsmantik.billing.rules import billing_month
from opsmantik.events import Event
from opsmantik.gateway.auth import SiteAuth
from opsmantik.gateway.sql import Q
from opsmantik.months import previous_month

log = logging.getLogger(__name__)

# A site unseen for this long leaves the refresh (its next request reads it again, ~1 ms once):
# long enough that a steady sender is never re-read per request, short enough that sites which
# stopped sending stop costing the refresh.
ACTIVE_FOR_S = 600.0


class QuotaCheck(NamedTuple):
    statuses: list[str]  # per event: accepted / overlimit / degraded
    exceeded_month: date | None  # set → 429 quota_exceeded


@dataclass
class UsageCache:
    stale_s: float
    clock: Callable[[], float] = time.monotonic
    usage: dict[tuple[uuid.UUID, date], int] = field(default_factory=dict)
    closed: frozenset[date] = frozenset()  # closed months (from the previous month on)
    loaded_at: float | None = None  # the last refresh
    active_for_s: float = ACTIVE_FOR_S
    # The sites whose usage is held (loaded and refreshed), with when a check last asked for each.
    seen: dict[uuid.UUID, float] = field(default_factory=dict)
    rows_read: int = 0  # usage rows the last refresh read (the test of "follows the active sites")
    _loading: dict[uuid.UUID, asyncio.Task[None]] = field(default_factory=dict)

    def age_s(self) -> float | None:
        return None if self.loaded_at is None else self.clock() - self.loaded_at

    def is_stale(self) -> bool:
        age = self.age_s()
        return age is None or age > self.stale_s

    def load(
        self, rows: Sequence[tuple[uuid.UUID, date, int]], closed: frozenset[date] = frozenset()
    ) -> None:
        """Replace the cache with these rows (their sites become the held ones)."""
        now = self.clock()
        self.usage = {(site, month): events for site, month, events in rows}
        self.seen = dict.fromkeys({site for site, _, _ in rows}, now)
        self.closed = closed
        self.loaded_at = now

    def needs_load(self, site: SiteAuth) -> bool:
        """True when `check` would need this site's usage and the cache does not hold it."""
        return (site.monthly_quota is not None or site.hard_cap is not None) and site.site_id not in self.seen

    async def load_site(
        self, pool: asyncpg.Pool, site_id: uuid.UUID, today: date, timeout_s: float = 2.0
    ) -> None:
        """Read one site's usage into the cache (its first request with a limit). Concurrent first
        requests of a site share one read; a failed read leaves the site out, so its check fails
        open (`degraded`) exactly as a stale cache does, and the next request tries again."""
        task = self._loading.get(site_id)
        if task is None:
            task = asyncio.ensure_future(self._read_site(pool, site_id, today, timeout_s))
            self._loading[site_id] = task
            task.add_done_callback(lambda _t: self._loading.pop(site_id, None))
        try:
            await asyncio.shield(task)
        except Exception as exc:  # noqa: BLE001 - not loaded → degraded, never an error
            log.warning("usage read of a site failed: %s", type(exc).__name__)

    async def _read_site(self, pool: asyncpg.Pool, site_id: uuid.UUID, today: date, timeout_s: float) -> None:
        async with pool.acquire(timeout=timeout_s) as conn:
            rows = await conn.fetch(Q["usage_of_sites"], previous_month(today), [site_id], timeout=timeout_s)
        for r in rows:
            self.usage[(site_id, r["month"])] = r["events"]
        self.seen[site_id] = self.clock()

    def booked_month(self, usage_month: date) -> date:
        """The month the worker books an event of `usage_month` into."""
        return billing_month(usage_month, self.closed) if self.closed else usage_month

    def check(self, site: SiteAuth, events: Sequence[Event]) -> QuotaCheck:
        if site.monthly_quota is None and site.hard_cap is None:
            return QuotaCheck(["accepted"] * len(events), None)  # nothing to check
        if self.is_stale() or site.site_id not in self.seen:
            return QuotaCheck(["degraded"] * len(events), None)
        self.seen[site.site_id] = self.clock()
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
        """Re-read the held sites' usage (and the closed months): a read of the active sites' rows,
        however many sites the database holds. Sites idle for `active_for_s` are dropped first."""
        started = self.clock()
        for site in [s for s, at in self.seen.items() if started - at > self.active_for_s]:
            del self.seen[site]
        sites = list(self.seen)
        # Events may be 35 days old: this month and the previous one cover every valid event.
        async with pool.acquire(timeout=timeout_s) as conn:
            rows = (
                await conn.fetch(Q["usage_of_sites"], previous_month(today), sites, timeout=timeout_s)
                if sites
                else []
            )
            closed = await conn.fetch(Q["closed_since"], previous_month(today), timeout=timeout_s)
        usage = {(r["site_id"], r["month"]): r["events"] for r in rows}
        # A site loaded by its first request while this read ran keeps what that read found.
        queried = set(sites)
        for key, events in self.usage.items():
            if key[0] in self.seen and key[0] not in queried:
                usage[key] = events
        self.usage, self.rows_read = usage, len(rows)
        self.closed = frozenset(r["month"] for r in closed)
        self.loaded_at = started

    async def run(self, pool: asyncpg.Pool, interval_s: float, today: Callable[[], date]) -> None:
        while True:
            try:
                await self.refresh(pool, today())
            except Exception as exc:  # noqa: BLE001 - stale cache → degraded, never an error
                log.warning("usage cache refresh failed (age %s s): %s", self.age_s(), type(exc).__name__)
            await asyncio.sleep(interval_s)
