"""`opsmantik dispatcher`: delivers the webhook outbox until SIGTERM/SIGINT (docs/alerts.md).

A separate process from the worker: the worker only writes outbox rows, so a receiver that hangs,
answers 500, drips or sends a huge body costs this process a bounded slot and nothing else.
Each attempt: claim (a lease, SKIP LOCKED: any number of dispatchers), sign anew (Standard
Webhooks; the same webhook-id on every attempt), POST with a total timeout, no redirects, at
most BODY_CAP bytes of the answer read, the connection closed. 2xx → delivered; anything else
→ retried after an exponential, jittered delay; past the retry window → parked.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import time
from typing import Any

import aiohttp
import asyncpg
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from opsmantik import process
from opsmantik.alerts import metrics, outbox, signing, urls
from opsmantik.config import Settings

log = logging.getLogger("opsmantik.dispatcher")
BODY_CAP = 4096  # bytes of a receiver's answer read (kept for last_error); the rest is never read
GAUGES_EVERY_S = 1.0


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver with the address check: the dispatcher's connector connects only to the
    addresses this returns, so the check holds at connect time (DNS rebinding). aiohttp does not
    resolve an IP literal: the dispatcher checks those with `parse` before each attempt."""

    def __init__(self, policy: urls.UrlPolicy) -> None:
        self.policy = policy
        self.inner = DefaultResolver()

    async def resolve(self, host: str, port: int = 0, family: Any = socket.AF_INET) -> list[ResolveResult]:
        results = await self.inner.resolve(host, port, family)
        urls.check_addresses(host, [r["host"] for r in results], self.policy)  # BadUrl: no connection
        return results

    async def close(self) -> None:
        await self.inner.close()


class Dispatcher:
    def __init__(self, settings: Settings, pool: asyncpg.Pool) -> None:
        self.settings = settings
        self.pool = pool
        self.policy = urls.UrlPolicy.of(settings)
        self.timeout_s = settings.dispatcher_timeout_s
        self.lease_s = 2 * settings.dispatcher_timeout_s + 1.0  # past any attempt's end
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                resolver=GuardedResolver(self.policy),
                limit=settings.dispatcher_concurrency,
                force_close=True,  # no connection kept to a receiver: nothing left half-read
            ),
            timeout=aiohttp.ClientTimeout(total=settings.dispatcher_timeout_s),
            auto_decompress=False,  # a compressed answer is never inflated (a zip bomb costs nothing)
        )
        self.in_flight: set[asyncio.Task[None]] = set()

    async def run(self, stop: asyncio.Event) -> None:
        log.info(
            "dispatcher delivering alert_outbox (concurrency %d, timeout %gs)",
            self.settings.dispatcher_concurrency,
            self.timeout_s,
        )
        next_gauges = 0.0
        while not stop.is_set():
            claimed = 0
            try:
                free = self.settings.dispatcher_concurrency - len(self.in_flight)
                if free > 0:
                    claimed = await self._claim(free)
                if time.monotonic() >= next_gauges:
                    await self._gauges()
                    next_gauges = time.monotonic() + GAUGES_EVERY_S
            except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
                log.warning("dispatcher: database unavailable (%s); retrying", type(exc).__name__)
            if claimed == 0 or len(self.in_flight) >= self.settings.dispatcher_concurrency:
                await self._pause(stop)

    async def _pause(self, stop: asyncio.Event) -> None:
        """Until the idle pause ends, a slot frees or stop is set."""
        waiter = asyncio.ensure_future(stop.wait())
        waits: set[asyncio.Future[Any]] = {waiter, *self.in_flight}
        await asyncio.wait(
            waits, timeout=self.settings.dispatcher_idle_s, return_when=asyncio.FIRST_COMPLETED
        )
        waiter.cancel()

    async def _claim(self, free: int) -> int:
        async with self.pool.acquire() as conn:
            rows = await outbox.claim(conn, free, self.lease_s)
        for row in rows:
            task = asyncio.create_task(self.deliver(row))
            self.in_flight.add(task)
            task.add_done_callback(self.in_flight.discard)
        metrics.IN_FLIGHT.set(len(self.in_flight))
        return len(rows)

    async def _gauges(self) -> None:
        async with self.pool.acquire() as conn:
            q = await outbox.queue(conn)
        metrics.QUEUE_PENDING.set(q.pending)
        metrics.QUEUE_OLDEST.set(q.oldest_s)
        metrics.PARKED.set(q.parked)

    async def attempt(self, row: outbox.Claimed) -> tuple[int | None, str]:
        """One POST: (status, error text); status None when no answer came."""
        key = signing.rule_key(self.settings.alerts_signing_secret, row.rule_id, row.secret_salt)
        headers = signing.headers(key, row.webhook_id, int(time.time()), row.body)
        try:
            urls.parse(row.url, self.policy)  # an IP literal is not resolved: checked here
            async with self.session.post(
                row.url, data=row.body, headers=headers, allow_redirects=False
            ) as resp:
                head = await resp.content.read(BODY_CAP)
                resp.close()  # the rest of a huge body is never read
                if 200 <= resp.status < 300:
                    return resp.status, ""
                return resp.status, f"HTTP {resp.status}: {head[:200].decode('utf-8', 'replace')}"
        except urls.BadUrl as exc:
            return None, f"refused: {exc}"
        except TimeoutError:
            return None, f"timeout after {self.timeout_s:g}s"
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            return None, f"{type(exc).__name__}: {str(exc)[:200]}"

    async def deliver(self, row: outbox.Claimed) -> None:
        started = time.monotonic()
        status, error = await self.attempt(row)
        metrics.ATTEMPT_SECONDS.observe(time.monotonic() - started)
        s = self.settings
        try:
            async with self.pool.acquire() as conn:
                if not error:
                    latency = await outbox.delivered(conn, row.webhook_id, status or 0)
                    metrics.DELIVERIES.labels("delivered").inc()
                    if latency is not None:
                        metrics.CROSSING_TO_DELIVERY.observe(latency)
                    return
                delay = outbox.backoff(row.attempts, s.dispatcher_backoff_base_s, s.dispatcher_backoff_cap_s)
                result = await outbox.failed(
                    conn, row.webhook_id, status, error, delay, s.dispatcher_retry_for_s
                )
        except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
            # The outcome is lost: the lease ends and the same webhook-id is sent again.
            log.warning("dispatcher: could not record %s (%s)", row.webhook_id, type(exc).__name__)
            return
        metrics.DELIVERIES.labels("parked" if result == "parked" else "failed").inc()
        log.info("webhook %s attempt %d failed (%s): %s", row.webhook_id, row.attempts, error, result)

    async def close(self) -> None:
        """Let deliveries in flight finish (up to one attempt's timeout; the others are retried
        after their lease)."""
        if self.in_flight:
            await asyncio.wait(set(self.in_flight), timeout=self.timeout_s)
            for task in self.in_flight:
                task.cancel()
        await self.session.close()


def main(settings: Settings, args: argparse.Namespace) -> int:
    process.start("dispatcher", settings, settings.dispatcher_metrics_port)
    return asyncio.run(process.run_until_stopped(settings, Dispatcher))
