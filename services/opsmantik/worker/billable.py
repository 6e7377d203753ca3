"""Publish ledgered events to the billable topic (schemas/billable.v1.json), keyed by site.

Each message is also a CloudEvent in the Kafka binding's binary mode (docs/cloudevents.md): the
value is the unchanged billable.v1 JSON (the event's `data`), the attributes are headers, see
`ce_headers`.

At-least-once: the worker publishes after the ledger COMMIT and acks the ingest messages
only after every delivery report came back clean. A crash in between replays the batch,
the ledger adds nothing, and the same rows are published again: consumers dedupe on
(site_id, event_id) (docs/worker.md has an example).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import orjson
from confluent_kafka import KafkaError, KafkaException, Producer

from opsmantik.config import Settings
from opsmantik.errors import Unavailable
from opsmantik.kafka.producer import KafkaHeaders
from opsmantik.kafka.settings import producer_config
from opsmantik.schema_files import json_schema
from opsmantik.worker.ledger import LedgerRow

# CloudEvents attributes of every billable message. ce_dataschema is the schema's own `$id`
# (an identifier: the same document ships in the package as opsmantik/schemas/billable.v1.json).
CE_TYPE = "dev.opsmantik.billable.v1"
CE_DATASCHEMA: str = json_schema("billable.v1.json")["$id"]
CE_SOURCE_PREFIX = "urn:opsmantik:site:"  # + site_id: (source, id) = the ledger's (site_id, event_id)
_SPECVERSION = ("ce_specversion", b"1.0")
_TYPE = ("ce_type", CE_TYPE.encode())
_CONTENT_TYPE = ("content-type", b"application/json")
_DATASCHEMA = ("ce_dataschema", CE_DATASCHEMA.encode())
POLL_S = 0.05  # poll() returns as soon as a report is served; this only bounds the stop check


class PublishError(Unavailable, RuntimeError):
    pass


def _iso(ts: datetime) -> str:
    if ts.tzinfo is not UTC:
        ts = ts.astimezone(UTC)
    return ts.isoformat(timespec="microseconds")


def to_billable(row: LedgerRow, site: str | None = None, iso: Callable[[datetime], str] = _iso) -> bytes:
    """`site`: str(row.site_id), when the caller has it already (one per batch and site);
    `iso`: a memo of _iso for the batch (ledgered_at is one value per batch, received_at one
    per request)."""
    return orjson.dumps(
        {
            "v": 1,
            "site_id": site if site is not None else str(row.site_id),
            "event_id": row.event_id,
            "type": row.event_type,
            "occurred_at": iso(row.occurred_at),
            "usage_month": row.usage_month.isoformat(),
            "billing_month": row.billing_month.isoformat(),
            "quantity": row.quantity,
            "billing_class": row.billing_class,
            "path": row.path,
            "received_at": iso(row.received_at),
            "ledgered_at": iso(row.ledgered_at),
            "kafka_partition": row.kafka_partition,
            "kafka_offset": row.kafka_offset,
            # jsonb's own text, embedded as it is (Postgres produced it: valid JSON, no re-parse)
            "properties": orjson.Fragment(row.properties) if row.properties is not None else None,
        }
    )


def ce_source(site: str) -> bytes:
    return (CE_SOURCE_PREFIX + site).encode()


def ce_headers(row: LedgerRow, source: bytes, occurred: str) -> KafkaHeaders:
    """The binary-mode headers of `row`'s message. `source`: ce_source of its site (one per batch
    and site); `occurred`: the ISO text of occurred_at the value carries (ce_time, RFC 3339).

    ce_id = event_id, so a consumer deduping CloudEvents on (source, id) dedupes on the ledger's
    key. ce_subject only for an event ingested as a CloudEvent (its `subject`, kept in
    properties.ce); an /api/sync event has none, and the attribute is optional."""
    headers: KafkaHeaders = [  # one list literal of prebuilt tuples: the cheapest build
        _SPECVERSION,
        ("ce_id", row.event_id.encode()),
        ("ce_source", source),
        _TYPE,
        ("ce_time", occurred.encode()),
        _CONTENT_TYPE,
        _DATASCHEMA,
    ]
    props = row.properties
    # `ce~` starts only the event_ids /api/v1/events derives (CLOUDEVENT_ID: `~` is outside
    # /api/sync's alphabet), so the prefix is the test; only those rows pay for the parse.
    if props is not None and row.event_id.startswith("ce~"):
        doc = orjson.loads(props)
        ce = doc.get("ce") if isinstance(doc, dict) else None
        subject = ce.get("subject") if isinstance(ce, dict) else None
        if isinstance(subject, str):
            headers.append(("ce_subject", subject.encode()))
    return headers


class _Send:
    """One publish: counts its delivery reports down (in the poll thread) and keeps the failures;
    the loop is woken once, by the last report (kafka/batch_producer.py's design)."""

    __slots__ = ("errors", "future", "loop", "remaining", "lock")

    def __init__(self, loop: asyncio.AbstractEventLoop, lock: threading.Lock, n: int) -> None:
        self.errors: list[KafkaError] = []
        self.future: asyncio.Future[None] = loop.create_future()
        self.loop = loop
        self.remaining = n + 1  # the send itself holds one until every message is produced
        self.lock = lock  # remaining is counted from the loop and from the poll thread

    def report(self, err: KafkaError | None, _msg: object) -> None:  # poll thread
        if err is not None:
            self.errors.append(err)
        self.add(-1)

    def add(self, n: int) -> None:
        with self.lock:
            self.remaining += n
            last = self.remaining == 0
        if last and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(_release, self.future)


def _release(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class BillablePublisher:
    """The billable topic's producer (acks=all, idempotent). A publish produces the messages
    Postgres formatted (ledger.sql billable_messages: key, value and the header values, all text;
    the client sends their UTF-8 bytes) and returns when every delivery report is in."""

    def __init__(self, settings: Settings) -> None:
        self.topic = settings.billable_topic
        self._producer = Producer(producer_config(settings, **{"message.timeout.ms": 15000}))
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(POLL_S)

    async def publish(
        self, messages: Sequence[Sequence[str | None]], full_queue_wait_s: float = 30.0
    ) -> None:
        """`messages`: ledger.billable_messages' rows (key, value, ce_id, ce_source, ce_time,
        ce_subject)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._poll, name="kafka-poll-billable", daemon=True)
            self._thread.start()
        s = _Send(asyncio.get_running_loop(), self._lock, len(messages))
        produce, report, topic = self._producer.produce, s.report, self.topic
        n = len(messages)
        i = j = 0
        stuck, deadline = -1, 0.0
        while i < n:
            try:
                for j in range(i, n):
                    key, value, ce_id, source, occurred, subject = messages[j]
                    headers = [  # ce_headers' order, one list literal of prebuilt tuples
                        _SPECVERSION,
                        ("ce_id", ce_id),
                        ("ce_source", source),
                        _TYPE,
                        ("ce_time", occurred),
                        _CONTENT_TYPE,
                        _DATASCHEMA,
                    ]
                    if subject is not None:
                        headers.append(("ce_subject", subject))
                    produce(topic, value, key, on_delivery=report, headers=headers)
                i = n
            except BufferError:  # local queue full: let deliveries drain, bounded per message
                if j != stuck:
                    stuck, deadline = j, time.monotonic() + full_queue_wait_s
                elif time.monotonic() > deadline:
                    raise  # the send fails (and is retried); reports still due just count down
                i = j
                await asyncio.sleep(0.01)
            except KafkaException as exc:  # refused up front (e.g. too large): never reported
                s.errors.append(exc.args[0])
                s.add(-1)
                i = j + 1
        s.add(-1)  # every message produced: the last report releases the send
        await s.future
        if s.errors:
            raise PublishError(f"{len(s.errors)} of {n} billable messages failed: {s.errors[0]}")

    def _close(self, timeout_s: float) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        self._producer.flush(timeout_s)

    async def close(self, timeout_s: float = 10.0) -> None:
        await asyncio.to_thread(self._close, timeout_s)
