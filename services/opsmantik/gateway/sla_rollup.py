"""The per-site SLA rollup of POST /api/sync and POST /api/v1/events (seed §2.1), flushed to sla_requests.

One row per site per minute with traffic, added to by every gateway (upsert), never a row per
request. The sync handler marks the request with its site (after authentication) and, for a 429,
which limit answered; gateway/app.py `observed` records the final status. Requests whose key
could not be resolved have no site and are only in the global slo_requests rollup.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg
from aiohttp import web

from opsmantik.gateway.counters import Counters
from opsmantik.gateway.sql import Q

log = logging.getLogger(__name__)
FLUSH_S = 5.0
FIELDS = ("received", "persisted", "errors_5xx", "errors_503", "rate_limited", "quota_exceeded", "invalid")
SITE: web.RequestKey[uuid.UUID] = web.RequestKey("sla_site", uuid.UUID)
LIMIT: web.RequestKey[str] = web.RequestKey("sla_limit", str)  # "rate_limited" | "quota_exceeded"


Key = tuple[uuid.UUID, datetime]  # (site, minute)
Current = tuple[int, dict[Key, list[int]], dict[uuid.UUID, list[int]]]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class SlaRollup:
    clock: Callable[[], datetime] = utc_now  # tests move it
    buckets: Counters[Key] = field(default_factory=lambda: Counters(FIELDS))
    _minute: tuple[int, datetime] = (-1, datetime.min)  # the real clock's: (minute number, minute)
    # The real clock's current minute on the request path: (minute number, the rows dict it counts
    # into, site -> its counts there), so a request reads one dict by its site (no (site, minute)
    # key built and hashed); a flush swaps the rows, so the cache serves only while they are
    # still `buckets.rows`.
    _current: Current | None = field(default=None, repr=False)

    def minute(self) -> datetime:
        """The current minute; with the real clock a datetime is made once a minute, not per request."""
        if self.clock is not utc_now:
            return self.clock().replace(second=0, microsecond=0)
        number = int(time.time() // 60)
        if self._minute[0] != number:
            self._minute = (number, datetime.fromtimestamp(number * 60, UTC))
        return self._minute[1]

    def record(self, site: uuid.UUID, status: int, limit: str | None = None) -> None:
        if self.clock is utc_now:
            number = int(time.time() // 60)
            cur = self._current
            if cur is None or cur[0] != number or cur[1] is not self.buckets.rows:
                cur = self._current = (number, self.buckets.rows, {})
            counts = cur[2].get(site)
            if counts is None:
                minute = datetime.fromtimestamp(number * 60, UTC)  # minute()'s, for this number
                counts = cur[2][site] = self.buckets.row((site, minute))
        else:
            counts = self.buckets.row((site, self.minute()))
        counts[0] += 1  # received; then at most one class (indexes of FIELDS)
        if 200 <= status < 300:  # /api/sync's 200, /api/v1/events' 204 (or 200): all stored
            counts[1] += 1
        elif status >= 500:
            counts[2] += 1
            counts[3] += status == 503
        elif status == 429:
            counts[5 if limit == "quota_exceeded" else 4] += 1
        elif status in (400, 413, 415):
            counts[6] += 1

    async def flush(self, pool: asyncpg.Pool, timeout_s: float = 2.0) -> int:
        taken = self.buckets.take()
        if not taken:
            return 0
        keys = list(taken)
        try:
            async with pool.acquire(timeout=timeout_s) as conn:
                await conn.execute(
                    Q["add_sla_requests"],
                    [k[0] for k in keys],
                    [k[1] for k in keys],
                    *([taken[k][i] for k in keys] for i in range(len(FIELDS))),
                    timeout=timeout_s,
                )
        except BaseException:
            self.buckets.restore(taken)
            raise
        return len(taken)

    async def run(self, pool: asyncpg.Pool, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.flush(pool)
            except Exception as exc:  # noqa: BLE001 - retried next interval
                log.warning(
                    "sla_requests flush failed, kept %d buckets: %s",
                    len(self.buckets.rows),
                    type(exc).__name__,
                )


SLA: web.AppKey[SlaRollup] = web.AppKey("sla", SlaRollup)


def start(app: web.Application, pool: asyncpg.Pool) -> asyncio.Task[None]:
    return asyncio.create_task(app[SLA].run(pool, FLUSH_S))


async def stop(app: web.Application, pool: asyncpg.Pool) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(app[SLA].flush(pool), 3.0)
