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

from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import orjson

from opsmantik.config import Settings
from opsmantik.errors import Unavailable
from opsmantik.kafka.batch_producer import BatchProducer
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
    def __init__(self, settings: Settings) -> None:
        self.topic = settings.billable_topic
        # One delivery callback object per batch, one loop wake-up (kafka/batch_producer.py)
        self._producer = BatchProducer(producer_config(settings, **{"message.timeout.ms": 15000}))

    async def publish(self, rows: Sequence[LedgerRow]) -> None:
        sites: dict[object, tuple[str, bytes, bytes]] = {}
        texts: dict[datetime, str] = {}

        def iso(ts: datetime) -> str:
            text = texts.get(ts)
            if text is None:
                text = texts[ts] = _iso(ts)
            return text

        messages = []
        headers = []
        for r in rows:
            site = sites.get(r.site_id)
            if site is None:
                text = str(r.site_id)
                site = sites[r.site_id] = (text, text.encode(), ce_source(text))
            messages.append((site[1], to_billable(r, site[0], iso)))
            headers.append(ce_headers(r, site[2], iso(r.occurred_at)))
        failed = await self._producer.send(self.topic, messages, headers=headers)
        if failed:
            raise PublishError(f"{len(failed)} of {len(rows)} billable messages failed: {failed[0]}")

    async def close(self) -> None:
        await self._producer.close()
