"""Shared Kafka parts: producer settings and topic creation."""

from __future__ import annotations

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from services.config import Settings


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


def ensure_topics(settings: Settings, timeout_s: float = 30.0) -> list[str]:
    """Create the ingest and billable topics when missing; return the ones created."""
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    wanted = [settings.topic, settings.billable_topic]
    new = [NewTopic(t, settings.topic_partitions, 1) for t in wanted if t not in existing]
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
