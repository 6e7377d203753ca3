"""Shared Kafka parts: producer settings, the message key, and topic creation."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from services.config import Settings


class TopicError(RuntimeError):
    """An existing topic cannot serve the configuration (e.g. fewer partitions than configured)."""


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


@dataclass(frozen=True)
class Replication:
    factor: int
    min_insync: int


def replication(settings: Settings, brokers: int) -> Replication:
    """The settings, or from the cluster's size: RF = min(3, brokers), min ISR = RF - 1 (≥ 1)."""
    factor = settings.replication_factor or min(3, max(1, brokers))
    min_insync = settings.min_insync_replicas or max(1, factor - 1)
    return Replication(factor, min(min_insync, factor))


def ensure_topics(settings: Settings, timeout_s: float = 30.0) -> list[str]:
    """Create the ingest and billable topics when missing; return the ones created. Raises
    TopicError when one exists with fewer partitions than configured (its keys would map to
    other partitions than a correctly sized topic's, and workers could not scale out)."""
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    metadata = admin.list_topics(timeout=timeout_s)
    wanted = [settings.topic, settings.billable_topic]
    for name in wanted:
        topic = metadata.topics.get(name)
        if topic is not None and topic.error is None and len(topic.partitions) < settings.topic_partitions:
            raise TopicError(
                f"topic {name} has {len(topic.partitions)} partitions, fewer than the configured "
                f"{settings.topic_partitions} (OPSMANTIK_TOPIC_PARTITIONS): add partitions with "
                "kafka-topics --alter, or configure the topic's count")
    rep = replication(settings, len(metadata.brokers))
    if rep.factor > len(metadata.brokers):
        raise TopicError(f"replication factor {rep.factor} needs {rep.factor} brokers; the cluster "
                         f"has {len(metadata.brokers)} (OPSMANTIK_REPLICATION_FACTOR)")
    config = {"min.insync.replicas": str(rep.min_insync)}
    new = [NewTopic(t, settings.topic_partitions, rep.factor, config=config)
           for t in wanted if t not in metadata.topics]
    if not new:
        return []
    created = []
    for topic, future in admin.create_topics(new, request_timeout=timeout_s).items():
        try:
            future.result(timeout_s)
            created.append(topic)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise
    return created
