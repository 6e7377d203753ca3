"""Publish ledgered events to the billable topic (services/opsmantik/schemas/billable.v1.json), keyed by site.

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
from opsmantik.kafka.batch_producer import BatchProducer
from opsmantik.kafka.settings import producer_config
from opsmantik.worker.ledger import LedgerRow


class PublishError(RuntimeError):
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


class BillablePublisher:
    def __init__(self, settings: Settings) -> None:
        self.topic = settings.billable_topic
        # One delivery callback object per batch, one loop wake-up (kafka/batch_producer.py)
        self._producer = BatchProducer(producer_config(settings, **{"message.timeout.ms": 15000}))

    async def publish(self, rows: Sequence[LedgerRow]) -> None:
        sites: dict[object, tuple[str, bytes]] = {}
        texts: dict[datetime, str] = {}

        def iso(ts: datetime) -> str:
            text = texts.get(ts)
            if text is None:
                text = texts[ts] = _iso(ts)
            return text

        messages = []
        for r in rows:
            site = sites.get(r.site_id)
            if site is None:
                text = str(r.site_id)
                site = sites[r.site_id] = (text, text.encode())
            messages.append((site[1], to_billable(r, site[0], iso)))
        failed = await self._producer.send(self.topic, messages)
        if failed:
            raise PublishError(f"{len(failed)} of {len(rows)} billable messages failed: {failed[0]}")

    async def close(self) -> None:
        await self._producer.close()
