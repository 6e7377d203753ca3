"""Drain the outbox: claim → produce → await delivery → delete, one transaction per batch.

The claim's row locks are held until the rows are on Kafka (acks=all) and deleted, so a
relay killed anywhere in between leaves the rows in place for the next claim; they are
produced again and the worker's ledger dedupes them (at-least-once into an exactly-once
ledger). Several relays run at once: FOR UPDATE SKIP LOCKED gives each its own rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

import asyncpg
from confluent_kafka import KafkaError
from prometheus_client import Counter, Gauge

from opsmantik.config import Settings
from opsmantik.db.queries import package_queries
from opsmantik.kafka.producer import AsyncProducer
from opsmantik.kafka.settings import message_key, producer_config

Q = package_queries("opsmantik.relay", "relay.sql")
log = logging.getLogger("opsmantik.relay")

DEPTH = Gauge("opsmantik_outbox_depth", "Outbox rows waiting to be relayed")
PARKED = Gauge("opsmantik_outbox_parked", "Outbox rows the broker refused for good (need an operator)")
OLDEST_AGE = Gauge("opsmantik_outbox_oldest_age_seconds", "Age of the oldest waiting outbox row")
DRAINED = Counter("opsmantik_outbox_drained_total", "Outbox rows produced to Kafka and deleted")
FAILURES = Counter("opsmantik_outbox_relay_failures_total", "Outbox rows whose produce failed")

# Errors retrying cannot fix: the row is parked instead of blocking the queue forever.
PERMANENT = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.INVALID_MSG, KafkaError.INVALID_RECORD})


@dataclass(frozen=True)
class Drained:
    claimed: int
    delivered: int
    failed: int


def is_permanent(err: KafkaError) -> bool:
    return err.code() in PERMANENT


class Relay:
    def __init__(self, settings: Settings, pool: asyncpg.Pool, producer: AsyncProducer | None = None) -> None:
        self.settings, self.pool = settings, pool
        self.producer = producer or AsyncProducer(producer_config(settings, **{"message.timeout.ms": 10000}))

    async def drain_once(self) -> Drained:
        """One batch in one transaction; rows that failed to produce stay (and are noted)."""
        failures: list[tuple[int, KafkaError]] = []
        async with self.pool.acquire() as conn:
            async with conn.transaction():
                rows = await conn.fetch(Q["claim"], self.settings.relay_batch)
                if not rows:
                    return Drained(0, 0, 0)
                errors = await self.producer.send(
                    self.settings.topic,
                    [
                        (message_key(self.settings, r["site_id"], r["event_id"]), bytes(r["payload"]))
                        for r in rows
                    ],
                )
                delivered = [r["id"] for r, e in zip(rows, errors, strict=True) if e is None]
                failures = [(r["id"], e) for r, e in zip(rows, errors, strict=True) if e is not None]
                if delivered:
                    await conn.execute(Q["delete_rows"], delivered)
            # COMMIT: delivered rows are gone only now; a crash before leaves them to re-send.
            for permanent in (True, False):
                ids = [i for i, e in failures if is_permanent(e) == permanent]
                if ids:
                    first = next(e for i, e in failures if i in ids)
                    await conn.execute(Q["note_failure"], ids, str(first), permanent)
        DRAINED.inc(len(delivered))
        FAILURES.inc(len(failures))
        if failures:
            log.warning("%d outbox row(s) not delivered: %s", len(failures), failures[0][1])
        return Drained(len(rows), len(delivered), len(failures))

    async def refresh_metrics(self) -> None:
        row = await self.pool.fetchrow(Q["depth"])
        DEPTH.set(row["pending"])
        PARKED.set(row["parked"])
        OLDEST_AGE.set(row["oldest_age_s"])

    async def run(self, stop: asyncio.Event) -> None:
        """Drain until stopped; back off on errors (broker or database away), never give up."""
        log.info("relay draining ingest_fallback_buffer to %s", self.settings.topic)
        delay = 0.0
        next_metrics = 0.0
        while not stop.is_set():
            try:
                if time.monotonic() >= next_metrics:
                    await self.refresh_metrics()
                    next_metrics = time.monotonic() + 1.0
                result = await self.drain_once()
                if result.failed:
                    delay = min(max(delay * 2, 0.2), 5.0)
                elif result.claimed:
                    delay = 0.0  # more may be waiting: go again at once
                else:
                    delay = self.settings.relay_idle_s
            except Exception as exc:
                delay = min(max(delay * 2, 0.2), 5.0)
                log.warning("relay batch failed (%r); retrying in %.1fs", exc, delay)
            if delay:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)

    async def close(self) -> None:
        await self.producer.close()
