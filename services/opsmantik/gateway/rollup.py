"""Per-minute SLO rollups of /api/sync, flushed to slo_requests by a background task.

Counts are added (upsert), so several gateways share a minute; a failed flush keeps its counts
and adds them to the next try. Never on the request path.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg
import orjson

from opsmantik.gateway.sql import Q

log = logging.getLogger(__name__)


@dataclass
class Minute:
    requests: int = 0
    errors_5xx: int = 0
    rejected_4xx: int = 0
    rate_limited: int = 0
    within_500ms: int = 0
    events: Counter[str] = field(default_factory=Counter)


@dataclass
class SloRollup:
    instance: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    minutes: dict[datetime, Minute] = field(default_factory=dict)

    # The request path's minute: (minute number, the dict it is in, its counts); a flush swaps
    # the dict, so the cached counts are used only while they are still in `minutes`.
    _current: tuple[int, dict[datetime, Minute], Minute] | None = field(default=None, repr=False)

    def record(
        self, code: int, seconds: float, outcomes: Counter[str] | None = None, now: datetime | None = None
    ) -> None:
        if now is not None:
            m = self._minute(now.replace(second=0, microsecond=0))
        else:  # a datetime only once a minute, not per request
            number = int(time.time() // 60)
            cur = self._current
            if cur is None or cur[0] != number or cur[1] is not self.minutes:
                minute = datetime.fromtimestamp(number * 60, UTC)
                cur = self._current = (number, self.minutes, self._minute(minute))
            m = cur[2]
        m.requests += 1
        m.errors_5xx += code >= 500
        m.rejected_4xx += 400 <= code < 500
        m.rate_limited += code == 429
        m.within_500ms += seconds <= 0.5
        if outcomes:
            m.events.update(outcomes)

    def _minute(self, minute: datetime) -> Minute:
        m = self.minutes.get(minute)
        if m is None:
            m = self.minutes[minute] = Minute()
        return m

    async def flush(self, pool: asyncpg.Pool, timeout_s: float = 2.0) -> int:
        taken, self.minutes = self.minutes, {}
        try:
            async with pool.acquire(timeout=timeout_s) as conn, conn.transaction():
                for minute, m in taken.items():
                    await conn.execute(
                        Q["add_slo_requests"],
                        minute,
                        self.instance,
                        m.requests,
                        m.errors_5xx,
                        m.rejected_4xx,
                        m.rate_limited,
                        m.within_500ms,
                        orjson.dumps(dict(m.events)).decode(),
                        timeout=timeout_s,
                    )
        except BaseException:
            for minute, m in taken.items():  # keep them for the next try
                kept = self.minutes.setdefault(minute, Minute())
                kept.requests += m.requests
                kept.errors_5xx += m.errors_5xx
                kept.rejected_4xx += m.rejected_4xx
                kept.rate_limited += m.rate_limited
                kept.within_500ms += m.within_500ms
                kept.events.update(m.events)
            raise
        return len(taken)

    async def run(self, pool: asyncpg.Pool, interval_s: float, on_failure: object = None) -> None:
        while True:
            await asyncio.sleep(interval_s)
            if not self.minutes:
                continue
            try:
                await self.flush(pool)
            except Exception as exc:  # noqa: BLE001 - retried next interval
                log.warning(
                    "slo_requests flush failed, kept %d minutes: %s", len(self.minutes), type(exc).__name__
                )
                if callable(on_failure):
                    on_failure()
