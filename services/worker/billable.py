"""Publish ledgered events to the billable topic (schemas/billable.v1.json), keyed by site.

At-least-once: the worker publishes after the ledger COMMIT and acks the ingest messages
only after every delivery report came back clean. A crash in between replays the batch,
the ledger adds nothing, and the same rows are published again: consumers dedupe on
(site_id, event_id) (docs/worker.md has an example).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import orjson

from services.async_producer import AsyncProducer
from services.config import Settings
from services.kafka import producer_config
from services.worker.ledger import LedgerRow


class PublishError(RuntimeError):
    pass


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat(timespec="microseconds")


def to_billable(row: LedgerRow) -> bytes:
    return orjson.dumps({
        "v": 1,
        "site_id": str(row.site_id),
        "event_id": row.event_id,
        "type": row.event_type,
        "occurred_at": _iso(row.occurred_at),
        "usage_month": row.usage_month.isoformat(),
        "billing_month": row.billing_month.isoformat(),
        "quantity": row.quantity,
        "billing_class": row.billing_class,
        "path": row.path,
        "received_at": _iso(row.received_at),
        "ledgered_at": _iso(row.ledgered_at),
        "kafka_partition": row.kafka_partition,
        "kafka_offset": row.kafka_offset,
        "properties": orjson.loads(row.properties) if row.properties is not None else None,
    })


class BillablePublisher:
    def __init__(self, settings: Settings) -> None:
        self.topic = settings.billable_topic
        self._producer = AsyncProducer(producer_config(settings, **{"message.timeout.ms": 15000}))

    async def publish(self, rows: Sequence[LedgerRow]) -> None:
        errors = await self._producer.send(
            self.topic, [(str(r.site_id).encode(), to_billable(r)) for r in rows])
        failed = [e for e in errors if e is not None]
        if failed:
            raise PublishError(f"{len(failed)} of {len(rows)} billable messages failed: {failed[0]}")

    async def close(self) -> None:
        await self._producer.close()
