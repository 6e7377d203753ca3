"""How far back and how recently the database can be rebuilt: the restore point's age, the oldest
backup, and whether the topic's retention still covers it. `opsmantik restore-point --prom FILE`
writes these gauges for node_exporter's textfile collector (a timer runs it each minute; the
alerts OpsmantikRestorePointStale and OpsmantikRetentionShorterThanBackups read them)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType  # type: ignore[attr-defined]

from opsmantik.config import Settings
from opsmantik.devstack.stack import Stack
from opsmantik.errors import Unavailable
from opsmantik.recovery import backup


@dataclass(frozen=True)
class RestorePoint:
    newest_restorable: datetime | None  # the newest archived WAL (or backup), None: no backup
    oldest_backup: datetime | None
    topic_retention_s: float | None  # None: unlimited (retention.ms = -1)


def topic_retention_s(settings: Settings) -> float | None:
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap, "log_level": 3})
    resource = ConfigResource(ResourceType.TOPIC, settings.topic)
    try:
        (configs,) = [f.result() for f in admin.describe_configs([resource], request_timeout=15).values()]
    except Exception as exc:  # KafkaException and its timeouts: the command cannot run
        raise Unavailable(
            f"Kafka at {settings.kafka_bootstrap} did not describe topic {settings.topic} ({exc}); "
            "start it with `opsmantik stack up`"
        ) from exc
    ms = int(configs["retention.ms"].value)
    return None if ms < 0 else ms / 1000


def restore_point(settings: Settings, stack: Stack) -> RestorePoint:
    done = backup.backups(stack)
    return RestorePoint(
        backup.newest_restorable(stack), done[0].finished if done else None, topic_retention_s(settings)
    )


def prometheus_text(point: RestorePoint) -> str:
    """Gauges; a missing value is left out (absent() in the alert covers "no backup at all")."""
    lines = []
    gauges = {
        "opsmantik_restore_newest_point_timestamp_seconds": point.newest_restorable,
        "opsmantik_backup_oldest_timestamp_seconds": point.oldest_backup,
    }
    for name, at in gauges.items():
        if at is not None:
            lines += [f"# TYPE {name} gauge", f"{name} {at.timestamp():.3f}"]
    retention = point.topic_retention_s if point.topic_retention_s is not None else float("inf")
    lines += [
        "# TYPE opsmantik_topic_retention_seconds gauge",
        f"opsmantik_topic_retention_seconds {retention}",
    ]
    return "\n".join(lines) + "\n"


def write_prom(path: Path, point: RestorePoint) -> None:
    """Atomically, as the textfile collector requires (it must never read half a file)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(prometheus_text(point))
    tmp.replace(path)
