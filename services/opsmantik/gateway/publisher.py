"""The Publisher seam: one `publish` for every backend. Each takes validated events and answers,
per event, its `Stored` receipt or None (that backend did not store it, and never will: nothing
of it is left queued). The handler's publisher never answers None: it raises `Unavailable` when
the events cannot be stored anywhere (→ 503, nothing acknowledged).

    KafkaPublisher     confluent-kafka, acks=all + idempotence, on opsmantik.kafka.producer's
                       LoopPolledProducer (reports served on the loop, no poll thread): one
                       Delivery (one future, one produce_batch() call) per produce batch,
                       settled on the loop;
                       what is not acknowledged within the delivery deadline is purged → None
    OutboxPublisher    one INSERT … unnest() transaction into ingest_fallback_buffer (all or
                       nothing; outcome `fallback`); raises Unavailable when Postgres refuses
    FallbackPublisher  wraps two publishers: the primary (Kafka) while the breaker allows it, the
                       secondary (the outbox) for whatever the primary did not store
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple, Protocol

import asyncpg
from confluent_kafka import KafkaError, KafkaException

from opsmantik import errors
from opsmantik.config import Settings
from opsmantik.events import Event, to_messages
from opsmantik.gateway.breaker import Breaker
from opsmantik.gateway.produce_batch import LIBRDKAFKA_LINGER_MS, ProduceBatcher, _Batch
from opsmantik.gateway.sql import Q
from opsmantik.kafka.producer import Delivery, LoopPolledProducer, Result
from opsmantik.kafka.settings import producer_config

log = logging.getLogger(__name__)
MAX_SITES = 10_000  # KafkaPublisher's cached key prefixes


class Stored(NamedTuple):
    status: str  # accepted / overlimit / degraded / fallback
    receipt: dict[str, int]  # {"partition", "offset"} or {"outbox_id"}


class Unavailable(errors.Unavailable):
    """Neither the broker nor the outbox took the events; the client may retry safely."""


class Publisher(Protocol):
    async def publish(
        self, site_id: uuid.UUID, events: Sequence[Event], statuses: Sequence[str], received_at: datetime
    ) -> list[Stored | None]: ...


def producer_settings(settings: Settings) -> dict[str, object]:
    return producer_config(
        settings,
        # librdkafka's own expiry: a message that never left the queue is reported failed after
        # this; the gateway decides much sooner (delivery_timeout_ms) and purges its queue.
        **{
            "message.timeout.ms": max(5000, settings.delivery_timeout_ms * 4),
            "reconnect.backoff.ms": 50,
            "reconnect.backoff.max.ms": 500,
            "socket.connection.setup.timeout.ms": 1000,
            "queue.buffering.max.messages": 200_000,
            "linger.ms": LIBRDKAFKA_LINGER_MS,  # the gateway lingers by load: produce_batch.py
        },
    )


class KafkaPublisher:
    def __init__(self, settings: Settings, on_error: Callable[[str], None] = lambda reason: None) -> None:
        self.topic = settings.topic
        self.settings = settings
        self.deadline_s = settings.delivery_timeout_ms / 1000
        self._on_error = on_error
        config = producer_settings(settings)
        config["error_cb"] = self._error_cb
        config["logger"] = logging.getLogger("opsmantik.gateway.librdkafka")  # not raw stderr
        self._polled = LoopPolledProducer(config)
        self.producer = self._polled.producer
        self.batcher = ProduceBatcher(self.produce, self.deadline_s, serve=self._polled.serve)
        self._sites: dict[uuid.UUID, tuple[bytes, bytes]] = {}  # site → (its key, its key prefix)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._polled.start(loop)

    def _error_cb(self, err: KafkaError) -> None:  # inside poll(): on the loop, or close()'s thread
        loop = self._polled.loop
        down = err.code() == KafkaError._ALL_BROKERS_DOWN or err.fatal()
        if down and loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._on_error, f"librdkafka: {err.name()}")

    def produce(self, keys: Sequence[bytes], values: Sequence[bytes]) -> Delivery:
        """Queue every value under its key; raises BufferError (queue full) or KafkaException. Values
        queued before the raise may still be delivered (the caller purges, as for a missed deadline)."""
        # reports served every busy_s from now on (kafka/producer.py)
        return self._polled.produce_all(self.topic, keys, values)

    def keys(self, site_id: uuid.UUID, events: Sequence[Event]) -> list[bytes]:
        """request_keys(settings, site_id, the events' ids), with the site's part of the key formatted
        once per site (str(UUID) is pure Python; tests/unit/test_gateway_publish_keys.py)."""
        cached = self._sites.get(site_id)
        if cached is None:
            if len(self._sites) >= MAX_SITES:
                self._sites.clear()  # bounded: a site not cached only costs its formatting again
            site = str(site_id).encode()
            cached = self._sites[site_id] = (site, site + b"/")
        if not events:
            return []
        mode = self.settings.partition_key
        if mode == "site":
            return [cached[0]] * len(events)
        prefix = cached[1]
        if mode == "event":
            return [prefix + e.event_id.encode() for e in events]
        return [prefix + events[0].event_id.encode()] * len(events)

    def join(
        self, site_id: uuid.UUID, events: Sequence[Event], statuses: Sequence[str], received_at: datetime
    ) -> tuple[_Batch, int] | None:
        """publish() up to its wait, for a request of at most `batcher.max_shared` events, without a
        coroutine: its messages joined to the open shared batch, (batch, start); await `batch.done`,
        then `receipts`. None: produce refused them (BufferError, KafkaException; whatever was
        queued is purged): every result is None."""
        values = to_messages(events, site_id, received_at, path="kafka", gateway_statuses=statuses)
        try:
            joined = self.batcher.join(self.keys(site_id, events), values)
        except (BufferError, KafkaException) as exc:
            self._refused(exc)
            return None
        assert joined is not None, "more events than a shared batch takes: publish() them"
        return joined

    def receipts(self, joined: tuple[_Batch, int], statuses: Sequence[str]) -> list[Stored | None]:
        """Once `joined`'s batch is done: each message's Stored, or None (purged)."""
        batch, start = joined
        try:
            delivered = batch.results(start, len(statuses))
        except (BufferError, KafkaException) as exc:  # what produce raised for the batch
            self._refused(exc)
            return [None] * len(statuses)
        return self._stored(statuses, delivered)

    async def publish(
        self, site_id: uuid.UUID, events: Sequence[Event], statuses: Sequence[str], received_at: datetime
    ) -> list[Stored | None]:
        """Acknowledged (acks=all) within the deadline → the receipt; anything else → None, and
        whatever is still queued is purged so it cannot land in Kafka after the answer."""
        if len(events) <= self.batcher.max_shared:
            # Requests share produce batches (one Delivery, one deadline timer each): the results
            # of this request's messages, a snapshot taken at its batch's deadline at the latest.
            joined = self.join(site_id, events, statuses, received_at)
            if joined is None:
                return [None] * len(events)
            await joined[0].done  # awaited here, not in a coroutine of the batcher's (issue 28)
            return self.receipts(joined, statuses)
        values = to_messages(events, site_id, received_at, path="kafka", gateway_statuses=statuses)
        try:  # many events: a batch of its own
            delivered = await self.batcher.submit(self.keys(site_id, events), values)
        except (BufferError, KafkaException) as exc:
            self._refused(exc)
            return [None] * len(events)
        return self._stored(statuses, delivered)

    def _refused(self, exc: BaseException) -> None:
        log.info("produce refused: %s", type(exc).__name__)
        self.purge_queued()  # part of the request may be queued

    def _stored(self, statuses: Sequence[str], delivered: Sequence[Result]) -> list[Stored | None]:
        stored = tuple.__new__  # Stored(status, receipt) without NamedTuple's Python-level __new__
        results: list[Stored | None] = [
            stored(Stored, (status, {"partition": r[0], "offset": r[1]})) if type(r) is tuple else None
            for status, r in zip(statuses, delivered, strict=True)
        ]
        if None in results:
            self.purge_queued()
        return results

    def purge_queued(self) -> None:
        """Drop messages still waiting in librdkafka's queue (never sent: definitely not stored),
        so a request we answered from the outbox, or with 503, cannot land in Kafka later."""
        try:
            self.producer.purge(in_queue=True, in_flight=False, blocking=False)
        except KafkaException as exc:
            log.warning("purge failed: %s", exc)

    def queue_depth(self) -> int:
        return len(self.producer)

    def stop(self) -> None:
        """On the loop, before close(): no more polling from the loop."""
        self._polled.stop()

    def close(self, timeout_s: float = 5.0) -> None:
        """Blocking: call from a thread, after stop()."""
        self._polled.close(timeout_s)


class OutboxPublisher:
    def __init__(self, pool: asyncpg.Pool, timeout_s: float = 2.0) -> None:
        self.pool = pool
        self.timeout_s = timeout_s

    async def store(
        self, site_id: uuid.UUID, event_ids: Sequence[str], payloads: Sequence[bytes], received_at: datetime
    ) -> dict[str, int]:
        """One transaction (a single statement) for all: committed together or not at all."""
        async with self.pool.acquire(timeout=self.timeout_s) as conn:
            rows = await conn.fetch(
                Q["insert_outbox"],
                site_id,
                list(event_ids),
                list(payloads),
                received_at,
                timeout=self.timeout_s,
            )
        return {r["event_id"]: r["id"] for r in rows}

    async def publish(
        self, site_id: uuid.UUID, events: Sequence[Event], statuses: Sequence[str], received_at: datetime
    ) -> list[Stored | None]:
        """Every event or none (one statement); each answered `fallback`, whatever the gateway
        judged it, as the worker decides its class when it ledgers the outbox's copy."""
        payloads = to_messages(
            events, site_id, received_at, path="fallback", gateway_statuses=["fallback"] * len(events)
        )
        try:
            ids = await self.store(site_id, [e.event_id for e in events], payloads, received_at)
        except Exception as exc:
            raise Unavailable(f"outbox: {type(exc).__name__}") from exc
        return [Stored("fallback", {"outbox_id": ids[e.event_id]}) for e in events]


@dataclass
class FallbackPublisher:
    primary: Publisher
    secondary: Publisher
    breaker: Breaker

    async def publish(
        self, site_id: uuid.UUID, events: Sequence[Event], statuses: Sequence[str], received_at: datetime
    ) -> list[Stored | None]:
        n = len(events)
        results: list[Stored | None] = [None] * n
        failed = n
        if self.breaker.allow_kafka():
            primary = self.primary
            if type(primary) is KafkaPublisher and n <= primary.batcher.max_shared:
                # KafkaPublisher.publish's shared-batch path inline: one coroutine less to suspend
                # and resume on every request (issue 28)
                joined = primary.join(site_id, events, statuses, received_at)
                if joined is not None:
                    await joined[0].done
                    results = primary.receipts(joined, statuses)
            else:
                results = await primary.publish(site_id, events, statuses, received_at)
            failed = results.count(None)
            if failed:
                self.breaker.failure(f"{failed} of {n} not acknowledged within the deadline")
            else:
                self.breaker.success()
        if failed:
            missing = [i for i, r in enumerate(results) if r is None]
            rest = await self.secondary.publish(
                site_id, [events[i] for i in missing], [statuses[i] for i in missing], received_at
            )
            if None in rest:
                raise Unavailable("the secondary publisher did not store every event")
            for i, stored in zip(missing, rest, strict=True):
                results[i] = stored
        return results
