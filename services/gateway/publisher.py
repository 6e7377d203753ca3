"""The Publisher seam: handlers hand it validated events and get a receipt per event, or
`Unavailable` when neither Kafka nor the outbox could take them (→ 503, nothing acknowledged).

    KafkaPublisher     confluent-kafka, acks=all + idempotence; a poll thread resolves one asyncio
                       future per message through loop.call_soon_threadsafe (never flush() on the loop)
    OutboxPublisher    one INSERT … unnest() transaction into ingest_fallback_buffer
    FallbackPublisher  Kafka while the breaker allows it, within the delivery deadline; whatever was
                       not acknowledged in time goes to the outbox (outcome `fallback`)
    MemoryPublisher    in-memory fake for pure-logic tests
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import asyncpg
from confluent_kafka import KafkaError, KafkaException, Producer

from services.config import Settings
from services.events import Event, to_message
from services.gateway.breaker import Breaker
from services.gateway.sql import Q
from services.kafka import producer_config

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stored:
    status: str                 # accepted / overlimit / degraded / fallback
    receipt: dict[str, int]     # {"partition", "offset"} or {"outbox_id"}


class Unavailable(Exception):
    """Neither the broker nor the outbox took the events; the client may retry safely."""


class Publisher(Protocol):
    async def publish(self, site_id: uuid.UUID, events: Sequence[Event], statuses: Sequence[str],
                      received_at: datetime) -> list[Stored]: ...


def producer_settings(settings: Settings) -> dict[str, object]:
    return producer_config(
        settings,
        # librdkafka's own expiry: a message that never left the queue is reported failed after
        # this; the gateway decides much sooner (delivery_timeout_ms) and purges its queue.
        **{"message.timeout.ms": max(5000, settings.delivery_timeout_ms * 4),
           "reconnect.backoff.ms": 50, "reconnect.backoff.max.ms": 500,
           "socket.connection.setup.timeout.ms": 1000,
           "queue.buffering.max.messages": 200_000},
    )


class KafkaPublisher:
    def __init__(self, settings: Settings, on_error: Callable[[str], None] = lambda reason: None) -> None:
        self.topic = settings.topic
        self._on_error = on_error
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        config = producer_settings(settings)
        config["error_cb"] = self._error_cb
        config["logger"] = logging.getLogger("opsmantik.gateway.librdkafka")  # not raw stderr
        self.producer = Producer(config)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread = threading.Thread(target=self._poll, name="kafka-poll", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.producer.poll(0.05)

    def _error_cb(self, err: KafkaError) -> None:  # poll thread
        down = err.code() == KafkaError._ALL_BROKERS_DOWN or err.fatal()
        if down and self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._on_error, f"librdkafka: {err.name()}")

    def produce(self, key: bytes, values: Sequence[bytes]) -> list[asyncio.Future[tuple[int, int]]]:
        """Queue every value; raises BufferError (queue full) or KafkaException."""
        assert self._loop is not None, "start() first"
        loop = self._loop
        futures: list[asyncio.Future[tuple[int, int]]] = []
        for value in values:
            fut: asyncio.Future[tuple[int, int]] = loop.create_future()

            def report(err: KafkaError | None, msg: Any, fut: asyncio.Future[tuple[int, int]] = fut) -> None:
                loop.call_soon_threadsafe(_resolve, fut, err, msg.partition(), msg.offset())

            self.producer.produce(self.topic, value, key, on_delivery=report)
            futures.append(fut)
        return futures

    def purge_queued(self) -> None:
        """Drop messages still waiting in librdkafka's queue (never sent: definitely not stored),
        so a request we answered from the outbox, or with 503, cannot land in Kafka later."""
        try:
            self.producer.purge(in_queue=True, in_flight=False, blocking=False)
        except KafkaException as exc:
            log.warning("purge failed: %s", exc)

    def queue_depth(self) -> int:
        return len(self.producer)

    def close(self, timeout_s: float = 5.0) -> None:
        """Blocking: call from a thread. Waits for outstanding deliveries, then stops polling."""
        self.producer.flush(timeout_s)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)


def _resolve(fut: asyncio.Future[tuple[int, int]], err: KafkaError | None, partition: int,
             offset: int) -> None:
    if fut.done():
        return
    if err is not None:
        fut.set_exception(KafkaException(err))
    else:
        fut.set_result((partition, offset))


class OutboxPublisher:
    def __init__(self, pool: asyncpg.Pool, timeout_s: float = 2.0) -> None:
        self.pool = pool
        self.timeout_s = timeout_s

    async def store(self, site_id: uuid.UUID, event_ids: Sequence[str], payloads: Sequence[bytes],
                    received_at: datetime) -> dict[str, int]:
        """One transaction (a single statement) for all: committed together or not at all."""
        async with self.pool.acquire(timeout=self.timeout_s) as conn:
            rows = await conn.fetch(Q["insert_outbox"], site_id, list(event_ids), list(payloads),
                                    received_at, timeout=self.timeout_s)
        return {r["event_id"]: r["id"] for r in rows}


@dataclass
class FallbackPublisher:
    kafka: KafkaPublisher
    outbox: OutboxPublisher
    breaker: Breaker
    deadline_s: float
    on_outcome: Callable[[str, int], None] = lambda outcome, n: None

    async def publish(self, site_id: uuid.UUID, events: Sequence[Event], statuses: Sequence[str],
                      received_at: datetime) -> list[Stored]:
        results: list[Stored | None] = [None] * len(events)
        if self.breaker.allow_kafka():
            await self._via_kafka(site_id, events, statuses, received_at, results)
        missing = [i for i, r in enumerate(results) if r is None]
        if missing:
            payloads = [to_message(events[i], site_id, received_at, path="fallback",
                                   gateway_status="fallback") for i in missing]
            try:
                ids = await self.outbox.store(site_id, [events[i].event_id for i in missing], payloads,
                                              received_at)
            except Exception as exc:
                raise Unavailable(f"outbox: {type(exc).__name__}") from exc
            for i in missing:
                results[i] = Stored("fallback", {"outbox_id": ids[events[i].event_id]})
        return [r for r in results if r is not None]

    async def _via_kafka(self, site_id: uuid.UUID, events: Sequence[Event], statuses: Sequence[str],
                         received_at: datetime, results: list[Stored | None]) -> None:
        values = [to_message(e, site_id, received_at, path="kafka", gateway_status=s)
                  for e, s in zip(events, statuses, strict=True)]
        try:
            futures = self.kafka.produce(str(site_id).encode(), values)
        except (BufferError, KafkaException) as exc:
            self.breaker.failure(f"produce: {type(exc).__name__}")
            return
        done, _ = await asyncio.wait(futures, timeout=self.deadline_s)
        failed = 0
        for i, fut in enumerate(futures):
            if fut in done and fut.exception() is None:
                partition, offset = fut.result()
                results[i] = Stored(statuses[i], {"partition": partition, "offset": offset})
            else:
                failed += 1
                if fut.done():
                    fut.exception()  # retrieved
                else:
                    fut.add_done_callback(_discard)
        if failed:
            self.breaker.failure(f"{failed} of {len(futures)} deliveries missed the deadline or failed")
            self.kafka.purge_queued()
        else:
            self.breaker.success()


def _discard(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


@dataclass
class MemoryPublisher:
    """In-memory fake: every event lands on `stored`; `fail` makes it raise Unavailable."""

    fail: bool = False
    stored: list[tuple[uuid.UUID, Event, str]] = field(default_factory=list)

    async def publish(self, site_id: uuid.UUID, events: Sequence[Event], statuses: Sequence[str],
                      received_at: datetime) -> list[Stored]:
        if self.fail:
            raise Unavailable("memory publisher set to fail")
        out = []
        for e, s in zip(events, statuses, strict=True):
            self.stored.append((site_id, e, s))
            out.append(Stored(s, {"partition": 0, "offset": len(self.stored) - 1}))
        return out
