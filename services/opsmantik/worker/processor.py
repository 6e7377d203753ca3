"""The product's LedgerStage (opsmantik.worker.pipeline states the contract): decode → ledger
transaction (retried) → billable publish (retried).

`begin` returns once the batch is committed, with its publish started; the ledger loop acks it
only after the publish finished. A failure is retried with backoff for
settings.worker_retry_max_s, then `Fatal` is raised: the worker exits non-zero and Kafka
redelivers the unacked batch to the next worker. Nothing is ever skipped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

import asyncpg

from opsmantik.config import Settings
from opsmantik.errors import Unavailable
from opsmantik.worker import metrics
from opsmantik.worker.billable import BillablePublisher
from opsmantik.worker.ledger import BatchResult, write_batch
from opsmantik.worker.message import DeadLetter, IngestEvent, decode

log = logging.getLogger("opsmantik.worker")
T = TypeVar("T")
RawMessage = tuple[bytes | None, int, int]  # value, partition, offset


class Fatal(Unavailable, RuntimeError):
    """A batch kept failing past the retry budget: exit rather than skip."""


class BatchProcessor:
    def __init__(
        self, settings: Settings, pool: asyncpg.Pool, publisher: BillablePublisher, instance: str
    ) -> None:
        self.settings, self.pool, self.publisher, self.instance = settings, pool, publisher, instance
        self.retrying = False  # the watchdog leaves a worker alone while it waits on the DB
        self.failed = asyncio.Event()
        self.failure: Fatal | None = None

    def fail(self, exc: Fatal) -> None:
        log.critical("giving up, exiting non-zero (batch left unacked): %s", exc)
        self.failure = exc
        self.failed.set()

    async def _retry(self, stage: str, attempt: Callable[[], Awaitable[T]]) -> T:
        deadline = time.monotonic() + self.settings.worker_retry_max_s
        delay = 0.1
        while True:
            try:
                result = await attempt()
                self.retrying = False
                return result
            except Exception as exc:  # any failure: never ack, retry, then give up loudly
                metrics.DB_RETRIES.labels(stage).inc()
                if time.monotonic() + delay > deadline:
                    raise Fatal(
                        f"{stage} kept failing for {self.settings.worker_retry_max_s}s: {exc!r}"
                    ) from exc
                self.retrying = True
                log.warning("%s failed (%r); retrying in %.1fs, batch not acked", stage, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _write(self, decoded: Sequence[IngestEvent | DeadLetter]) -> BatchResult:
        events = [d for d in decoded if isinstance(d, IngestEvent)]
        dead = [d for d in decoded if isinstance(d, DeadLetter)]

        async def write() -> BatchResult:
            async with self.pool.acquire() as conn:
                return await write_batch(conn, self.settings.topic, self.instance, events, dead)

        # Any failure is retried, then fail-stop. decode() dead-letters whatever the gateway would
        # not have accepted, so Postgres refusing a decoded event means the two disagree: a bug
        # to fix, not a message to drop (tests/integration/test_capture_property.py and
        # test_topic_fuzz.py hold decode to both sides).
        return await self._retry("db", write)

    async def begin(self, batch: Sequence[RawMessage]) -> Staged:
        """The ledger transaction, awaited; the billable publish started, not awaited (issue 22:
        the ledger loop writes the next batch while this one publishes, and acks this one only
        after `published` finished). A failing publish raises `Fatal` from `published`."""
        result = await self._write([decode(v, p, o) for v, p, o in batch])
        now = datetime.now(UTC)
        lags = [(now - r).total_seconds() for r in result.new_received]  # one per request
        metrics.observe_many(metrics.FRESHNESS, lags, list(result.new_received.values()))
        if lags:
            metrics.FRESHNESS_LAST.set(max(lags))
        metrics.BATCHES.inc()
        metrics.EVENTS.labels("new").inc(result.new)
        metrics.EVENTS.labels("duplicate").inc(result.duplicates)
        metrics.EVENTS.labels("dead_letter").inc(result.dead_letters)
        metrics.OVERLIMIT.inc(result.overlimit)
        if result.dead_letters:
            log.error("%d message(s) dead-lettered to ingest_dead_letter", result.dead_letters)
        return Staged(result, asyncio.ensure_future(self._publish(result)))

    async def _publish(self, result: BatchResult) -> None:
        if result.billable:
            await self._retry("publish", lambda: self.publisher.publish(result.billable))
            metrics.BILLABLE.inc(len(result.billable))


@dataclass(frozen=True)
class Staged:
    """A batch whose ledger transaction committed; `published` finishes with its billable publish."""

    result: BatchResult
    published: asyncio.Future[None]
