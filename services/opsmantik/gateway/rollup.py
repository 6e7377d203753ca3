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
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg
import orjson

from opsmantik.gateway.counters import Counters
from opsmantik.gateway.sql import Q

log = logging.getLogger(__name__)


OUTCOMES = ("accepted", "overlimit", "degraded", "fallback")  # events_by_status's keys
FIELDS = ("requests", "errors_5xx", "rejected_4xx", "rate_limited", "within_500ms", *OUTCOMES)
_FIRST_OUTCOME = FIELDS.index(OUTCOMES[0])
_OUTCOME_INDEX = {name: _FIRST_OUTCOME + i for i, name in enumerate(OUTCOMES)}


@dataclass
class SloRollup:
    instance: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    minutes: Counters[datetime] = field(default_factory=lambda: Counters(FIELDS))

    # The request path's minute: (minute number, the dict it is in, its counts); a flush swaps
    # the dict, so the cached counts are used only while they are still in `minutes`.
    _current: tuple[int, dict[datetime, list[int]], list[int]] | None = field(default=None, repr=False)

    def record(
        self,
        code: int,
        seconds: float,
        outcomes: Mapping[str, int] | None = None,
        now: datetime | None = None,
    ) -> None:
        if now is not None:
            m = self.minutes.row(now.replace(second=0, microsecond=0))
        else:  # a datetime only once a minute, not per request
            number = int(time.time() // 60)
            cur = self._current
            if cur is None or cur[0] != number or cur[1] is not self.minutes.rows:
                minute = datetime.fromtimestamp(number * 60, UTC)
                cur = self._current = (number, self.minutes.rows, self.minutes.row(minute))
            m = cur[2]
        m[0] += 1
        m[1] += code >= 500
        m[2] += 400 <= code < 500
        m[3] += code == 429
        m[4] += seconds <= 0.5
        if outcomes:
            for name, n in outcomes.items():
                m[_OUTCOME_INDEX[name]] += n

    async def flush(self, pool: asyncpg.Pool, timeout_s: float = 2.0) -> int:
        taken = self.minutes.take()
        try:
            async with pool.acquire(timeout=timeout_s) as conn, conn.transaction():
                for minute, m in taken.items():
                    events = {name: n for name, n in zip(OUTCOMES, m[_FIRST_OUTCOME:], strict=True) if n}
                    await conn.execute(
                        Q["add_slo_requests"],
                        minute,
                        self.instance,
                        *m[:_FIRST_OUTCOME],
                        orjson.dumps(events).decode(),
                        timeout=timeout_s,
                    )
        except BaseException:
            self.minutes.restore(taken)
            raise
        return len(taken)

    async def run(self, pool: asyncpg.Pool, interval_s: float, on_failure: object = None) -> None:
        while True:
            await asyncio.sleep(interval_s)
            if not self.minutes.rows:
                continue
            try:
                await self.flush(pool)
            except Exception as exc:  # noqa: BLE001 - retried next interval
                log.warning(
                    "slo_requests flush failed, kept %d minutes: %s",
                    len(self.minutes.rows),
                    type(exc).__name__,
                )
                if callable(on_failure):
                    on_failure()
