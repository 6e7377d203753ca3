"""The producer settings every writer of our topics uses, and the ingest topic's message keys."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from opsmantik.config import Settings


def producer_config(settings: Settings, **overrides: object) -> dict[str, object]:
    """A durable producer: acks=all and idempotence (off by default in librdkafka)."""
    config: dict[str, object] = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 2,
        "compression.type": "lz4",
    }
    config.update(overrides)
    return config


def message_key(settings: Settings, site_id: uuid.UUID | str, event_id: str) -> bytes:
    """The ingest topic's key for one event: `site_id/event_id`, or `site_id` alone when
    OPSMANTIK_PARTITION_KEY=site. Either way the ledger's unique (site_id, event_id) keeps
    dedupe exact across partitions (docs/scaling.md)."""
    if settings.partition_key == "site":
        return str(site_id).encode()
    return f"{site_id}/{event_id}".encode()


def request_keys(settings: Settings, site_id: uuid.UUID | str, event_ids: Sequence[str]) -> list[bytes]:
    """Keys for one request's events. "request" (default): the whole request under the key of its
    first event, so a batch goes to one partition (one leader acks it, not every broker) while a
    site's requests spread over every partition; "event": each event its own key; "site": one
    partition per site."""
    if not event_ids:
        return []
    if settings.partition_key == "event":
        return [message_key(settings, site_id, e) for e in event_ids]
    return [message_key(settings, site_id, event_ids[0])] * len(event_ids)
