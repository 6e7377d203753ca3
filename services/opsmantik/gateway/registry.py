"""Gateways that share a site's rate limit: a live registry in Postgres with heartbeats.

Each gateway process upserts its row every `heartbeat_s` in a background task (never on a
request) and learns N, the gateways heard from within `dead_after_s`; its token bucket for a
site then refills at rate/N with burst/N. So N gateways give a site its configured rate in
total. A gateway that dies stops beating and drops out of everyone's N within `dead_after_s`
(+ one heartbeat): the survivors take the whole rate. A clean stop deletes its row at once.
While Postgres is unreachable a gateway keeps the last N it knew (no gateway starts taking
N times the rate because the database blinked).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from dataclasses import dataclass, field

import asyncpg

from opsmantik.db.queries import package_queries

Q = package_queries("opsmantik.gateway", "registry.sql")
log = logging.getLogger("opsmantik.gateway.registry")
PRUNE_EVERY = 600  # heartbeats between two prunes of long-dead rows


@dataclass
class GatewayRegistry:
    heartbeat_s: float
    dead_after_s: float
    instance_id: str = field(
        default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
    )
    live: int = 1  # gateways heard from, us included; 1 until the first heartbeat answers
    beats: int = 0

    def share(self, rate: float, burst: int) -> tuple[float, int]:
        """This gateway's part of a site's limits: rate/N and burst/N (at least one request)."""
        n = self.live
        if n <= 1:
            return rate, burst
        return rate / n, max(1, round(burst / n))

    async def beat(self, pool: asyncpg.Pool, timeout_s: float = 2.0) -> int:
        async with pool.acquire(timeout=timeout_s) as conn:
            live = await conn.fetchval(
                Q["heartbeat"],
                self.instance_id,
                socket.gethostname(),
                os.getpid(),
                self.dead_after_s,
                timeout=timeout_s,
            )
            self.beats += 1
            if self.beats % PRUNE_EVERY == 0:
                await conn.execute(Q["prune"], timeout=timeout_s)
        if live != self.live:
            log.info("gateways live: %d (was %d); each takes 1/%d of a site's rate", live, self.live, live)
        self.live = int(live)
        return self.live

    async def run(self, pool: asyncpg.Pool) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            try:
                await self.beat(pool, timeout_s=max(0.5, self.heartbeat_s))
            except Exception as exc:  # noqa: BLE001 - keep the last N while Postgres is away
                log.warning("gateway heartbeat failed, keeping N=%d: %s", self.live, type(exc).__name__)

    async def leave(self, pool: asyncpg.Pool, timeout_s: float = 2.0) -> None:
        """Clean stop: drop our row so the others take our share at their next heartbeat."""
        async with pool.acquire(timeout=timeout_s) as conn:
            await conn.execute(Q["leave"], self.instance_id, timeout=timeout_s)
