"""Topic creation and replication from the cluster's size."""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic  # where it is defined (admin re-exports it untyped)

from opsmantik.config import Settings
from opsmantik.errors import CheckFailed


class TopicError(CheckFailed, RuntimeError):
    """An existing topic cannot serve the configuration (e.g. fewer partitions than configured)."""


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
                "kafka-topics --alter, or configure the topic's count"
            )
    rep = replication(settings, len(metadata.brokers))
    if rep.factor > len(metadata.brokers):
        raise TopicError(
            f"replication factor {rep.factor} needs {rep.factor} brokers; the cluster "
            f"has {len(metadata.brokers)} (OPSMANTIK_REPLICATION_FACTOR)"
        )
    config = {"min.insync.replicas": str(rep.min_insync)}
    new = [
        NewTopic(t, settings.topic_partitions, rep.factor, config=config)
        for t in wanted
        if t not in metadata.topics
    ]
    if not new:
        return []
    created: list[str] = []
    for name, future in admin.create_topics(new, request_timeout=timeout_s).items():
        try:
            future.result(timeout_s)
            created.append(name)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise
    return created
