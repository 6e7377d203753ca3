"""`opsmantik recover --since TIME`: rebuild the ledger from the topic by rewinding consumer groups.

Kafka keeps every acknowledged event for the topic's retention; the ledger dedupes on
(site_id, event_id). So after the database lost rows (restored from a backup, a disk gone), moving
the worker group's committed offsets back to the first message at or after TIME minus a margin
and letting the worker run replays exactly what is missing: rows already there are duplicates and
change nothing. This module only uses Kafka's own mechanisms: ListOffsets by timestamp
(`offsets_for_times`), DescribeGroups, and OffsetCommit from outside the group (the broker's
`kafka-consumer-groups --reset-offsets`).

Refusals (nothing is changed): a group that has members (the broker would reject the commit, and
a running worker would overwrite it), and a partition whose retention no longer reaches back to
TIME minus the margin (its log start moved and the first retained message is younger: events
between are gone from the topic, and replay could not restore them).

Offsets only move back: a partition whose committed offset is already before the target (a
worker behind) keeps it; one with no committed offset is left alone (the worker then starts at
the earliest offset anyway).
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import confluent_kafka.admin as kafka_admin
from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from opsmantik.config import Settings
from opsmantik.errors import Refused, Unavailable

OffsetSpec: Any = getattr(kafka_admin, "OffsetSpec")  # noqa: B009 (not in the stubs' exports)

TIMEOUT_S = 15.0


@dataclass(frozen=True)
class PartitionPlan:
    group: str
    partition: int
    committed: int | None  # the group's committed offset before (None: nothing committed)
    target: int  # the offset of the first message at or after since - margin (the end if none)
    new: int | None  # what is committed (None: left alone)

    @property
    def replayed(self) -> int:
        """Messages the group reads again."""
        if self.new is None or self.committed is None:
            return 0
        return max(0, self.committed - self.new)


@dataclass(frozen=True)
class Recovery:
    topic: str
    since: datetime
    start: datetime  # since - margin: where the rewind goes
    groups: tuple[str, ...]
    partitions: tuple[PartitionPlan, ...]
    applied: bool

    @property
    def replayed(self) -> int:
        return sum(p.replayed for p in self.partitions)


@dataclass(frozen=True)
class Retained:
    """What a partition still holds: its log start and the timestamp of its first message."""

    partition: int
    log_start: int
    first_timestamp: datetime | None  # None: the partition holds no message


def _admin(settings: Settings) -> AdminClient:
    return AdminClient({"bootstrap.servers": settings.kafka_bootstrap, "log_level": 3})


def _result(futures: dict[Any, Future[Any]]) -> list[Any]:
    try:
        return [f.result() for f in futures.values()]
    except KafkaException as exc:
        raise Unavailable(f"Kafka at the bootstrap refused or did not answer: {exc}") from exc


def _partitions(admin: AdminClient, topic: str) -> list[int]:
    try:
        meta = admin.list_topics(topic, timeout=TIMEOUT_S)
    except KafkaException as exc:
        raise Unavailable(f"Kafka unreachable: {exc}; start it with `opsmantik stack up`") from exc
    info = meta.topics.get(topic)
    if info is None or info.error is not None or not info.partitions:
        raise Refused(f"topic {topic} does not exist (OPSMANTIK_TOPIC)")
    return sorted(info.partitions)


def _list_offsets(admin: AdminClient, topic: str, parts: list[int], spec: OffsetSpec) -> dict[int, object]:
    futures = admin.list_offsets({TopicPartition(topic, p): spec for p in parts}, request_timeout=TIMEOUT_S)
    return {tp.partition: r for tp, r in zip(futures, _result(futures), strict=True)}


def _ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


def retained(settings: Settings, topic: str | None = None) -> list[Retained]:
    """Per partition, its log start and the timestamp of its first retained message."""
    admin = _admin(settings)
    topic = topic or settings.topic
    parts = _partitions(admin, topic)
    starts = _list_offsets(admin, topic, parts, OffsetSpec.earliest())
    firsts = _list_offsets(admin, topic, parts, OffsetSpec.for_timestamp(0))
    out = []
    for p in parts:
        first = firsts[p]
        ts = first.timestamp if first.offset >= 0 else -1  # type: ignore[attr-defined]
        stamp = datetime.fromtimestamp(ts / 1000, UTC) if ts >= 0 else None
        out.append(Retained(p, starts[p].offset, stamp))  # type: ignore[attr-defined]
    return out


def _check_retention(topic: str, start: datetime, kept: list[Retained]) -> None:
    """Refuse when a partition has deleted messages (log start > 0) and its first retained message
    is younger than `start`: what lay between is no longer in the topic."""
    short = [r for r in kept if r.log_start > 0 and (r.first_timestamp is None or r.first_timestamp > start)]
    if short:
        named = ", ".join(
            f"{topic}[{r.partition}] starts at offset {r.log_start}"
            + (f" ({r.first_timestamp.isoformat(timespec='seconds')})" if r.first_timestamp else " (empty)")
            for r in short
        )
        raise Refused(
            f"the topic's retention no longer reaches back to {start.isoformat(timespec='seconds')} "
            f"(--since minus the margin): {named}; events before those offsets are gone from Kafka "
            "and a replay cannot restore them: restore the database to a later point, or recover "
            "the rest from the dead letters/producers (docs/runbook.md)"
        )


def _check_idle(admin: AdminClient, groups: tuple[str, ...]) -> None:
    """Refuse while any group has members: a member would commit over the rewind (and the broker
    refuses an outside commit to a group that is not empty)."""
    described = _result(admin.describe_consumer_groups(list(groups), request_timeout=TIMEOUT_S))
    busy = []
    for g in described:
        members = list(g.members or [])
        if members:
            who = ", ".join(f"{m.client_id}@{m.host}" for m in members)
            busy.append(f"{g.group_id} ({len(members)} active: {who})")
    if busy:
        raise Refused(
            "consumer group(s) with active members: " + "; ".join(busy) + ". Stop those processes "
            "(the worker, and `opsmantik audit --follow`) first, then run recover again"
        )


def _committed(admin: AdminClient, group: str, topic: str, parts: list[int]) -> dict[int, int | None]:
    request = [ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in parts])]
    (res,) = _result(admin.list_consumer_group_offsets(request, request_timeout=TIMEOUT_S))
    return {tp.partition: tp.offset if tp.offset >= 0 else None for tp in res.topic_partitions}


def plan_partition(group: str, partition: int, committed: int | None, target: int) -> PartitionPlan:
    """Only ever back: keep a committed offset already before the target; leave none alone."""
    new = None if committed is None or committed <= target else target
    return PartitionPlan(group, partition, committed, target, new)


def recover(settings: Settings, since: datetime, margin: timedelta, *, dry_run: bool = False) -> Recovery:
    """Rewind the worker's and the audit's groups to the topic's offsets of since - margin."""
    topic = settings.topic
    groups = (settings.worker_group, settings.audit_group)
    start = since - margin
    admin = _admin(settings)
    parts = _partitions(admin, topic)
    _check_retention(topic, start, retained(settings, topic))
    _check_idle(admin, groups)
    found = _list_offsets(admin, topic, parts, OffsetSpec.for_timestamp(_ms(start)))
    ends = _list_offsets(admin, topic, parts, OffsetSpec.latest())
    # No message at or after `start` in a partition: its target is its end (nothing to replay).
    target = {p: r.offset if r.offset >= 0 else ends[p].offset for p, r in found.items()}  # type: ignore[attr-defined]
    plans = []
    for group in groups:
        committed = _committed(admin, group, topic, parts)
        plans += [plan_partition(group, p, committed.get(p), target[p]) for p in parts]
    if not dry_run:
        for group in groups:
            moves = [
                TopicPartition(topic, p.partition, p.new)
                for p in plans
                if p.group == group and p.new is not None
            ]
            if moves:
                request = [ConsumerGroupTopicPartitions(group, moves)]
                _result(admin.alter_consumer_group_offsets(request, request_timeout=TIMEOUT_S))
    return Recovery(topic, since, start, groups, tuple(plans), not dry_run)
