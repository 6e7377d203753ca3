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
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from queue import SimpleQueue

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
DR_POLL_S = 0.001  # while a publish waits for its delivery reports, the loop serves them this often


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


class BillablePublisher:
    """The billable topic's producer (acks=all, idempotent). A publish produces the messages
    Postgres formatted (ledger.sql insert_ledger and ledgered_copies: the key, the value and the
    header values as text; the client sends their UTF-8 bytes) and returns when every delivery
    report is in, raising PublishError if any failed.

    Delivery reports are served on the event loop, by poll(0) every DR_POLL_S while a publish
    waits, not by a poll thread: a report served in another thread takes the GIL back from the
    loop once per message (issue 28). Each message's report is `SimpleQueue.put(err, msg)` of its
    publish's own queue (a C call: no Python frame per message; `msg` lands in put's `block`
    argument, which a SimpleQueue ignores), so two publishes in flight at once (the ledger loop
    pipelines them) each count exactly their own messages."""

    def __init__(self, settings: Settings, message_timeout_ms: int = 15000) -> None:
        self.topic = settings.billable_topic
        self._producer = Producer(producer_config(settings, **{"message.timeout.ms": message_timeout_ms}))

    async def publish(
        self, messages: Sequence[Sequence[str | None]], full_queue_wait_s: float = 30.0
    ) -> None:
        """`messages`: (key, value, ce_id, ce_source, ce_time, ce_subject) each, ce_subject None
        for no such header; ledger.BatchResult.billable."""
        reports: SimpleQueue[KafkaError | None] = SimpleQueue()
        report = reports.put
        produce, poll, topic = self._producer.produce, self._producer.poll, self.topic
        refused: list[KafkaError] = []
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
                    produce(topic, value, key, on_delivery=report, headers=headers)  # type: ignore[arg-type]
                i = n
            except BufferError:  # local queue full: serve reports (they free it), bounded per message
                if j != stuck:
                    stuck, deadline = j, time.monotonic() + full_queue_wait_s
                elif time.monotonic() > deadline:
                    raise  # the send fails (and is retried); its reports are served by later polls
                i = j
                poll(0)
                await asyncio.sleep(0.01)
            except KafkaException as exc:  # refused up front (e.g. too large): never reported
                refused.append(exc.args[0])
                i = j + 1
        expected = n - len(refused)
        poll(0)
        while reports.qsize() < expected:
            await asyncio.sleep(DR_POLL_S)
            poll(0)
        get = reports.get_nowait
        errors = refused + [err for err in (get() for _ in range(expected)) if err is not None]
        if errors:
            raise PublishError(f"{len(errors)} of {n} billable messages failed: {errors[0]}")

    def _close(self, timeout_s: float) -> None:
        self._producer.flush(timeout_s)

    async def close(self, timeout_s: float = 10.0) -> None:
        await asyncio.to_thread(self._close, timeout_s)
