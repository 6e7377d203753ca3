"""Reads the live signals behind the component states: a broker probe, a few small queries on the
status page's own Postgres connection, and the gateway's in-process state (breaker, /api/usage
answers). Every read is bounded by a timeout; a failed read is a signal ("unreachable"), not an error.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from prometheus_client.metrics_core import Metric

from opsmantik.config import Settings
from opsmantik.db.queries import package_queries
from opsmantik.status.components import Signals

Q = package_queries("opsmantik.status", "status.sql")
log = logging.getLogger("opsmantik.status")
USAGE_ROUTES = ("/api/usage", "/api/billing/dispute-export")


class BrokerProbe:
    """A metadata request to the cluster (what any client does first). Its own AdminClient: the
    probe never queues behind, or adds to, the gateway producer's traffic."""

    def __init__(self, settings: Settings, timeout_s: float) -> None:
        self.topic = settings.topic
        self.timeout_s = timeout_s
        self._admin = AdminClient(
            {
                "bootstrap.servers": settings.kafka_bootstrap,
                "socket.connection.setup.timeout.ms": max(1000, int(timeout_s * 1000)),
                "log_level": 0,
            }
        )

    def _probe(self) -> bool:
        try:
            meta = self._admin.list_topics(self.topic, timeout=self.timeout_s)
        except KafkaException:
            return False
        topic = meta.topics.get(self.topic)
        # Reachable = a broker answered and the topic has leaders (a stopped broker's cached
        # metadata is not an answer: list_topics raises when no broker replies in time).
        return (
            bool(meta.brokers)
            and topic is not None
            and topic.error is None
            and all(p.leader >= 0 for p in topic.partitions.values())
        )

    async def reachable(self) -> bool:
        return await asyncio.to_thread(self._probe)


@dataclass
class CounterWindow:
    """Deltas of monotonically growing counters over a sliding window (for /api/usage answers,
    which have no Postgres rollup: they come from this process's Prometheus counters)."""

    window_s: float
    samples: deque[tuple[float, int, int]] = field(default_factory=deque)

    def add(self, now: float, requests: int, errors: int) -> tuple[int, int]:
        self.samples.append((now, requests, errors))
        while len(self.samples) > 1 and now - self.samples[1][0] >= self.window_s:
            self.samples.popleft()
        _, r0, e0 = self.samples[0]
        return max(0, requests - r0), max(0, errors - e0)


def usage_counts(collect: Callable[[], Iterable[Metric]]) -> tuple[int, int]:
    """Total answers and 5xx of the usage routes, from the gateway's requests counter."""
    requests = errors = 0
    for metric in collect():
        for sample in metric.samples:
            if sample.name.endswith("_total") and sample.labels.get("route") in USAGE_ROUTES:
                requests += int(sample.value)
                errors += int(sample.value) if sample.labels.get("code", "").startswith("5") else 0
    return requests, errors


@dataclass(frozen=True)
class DbReading:
    sync: asyncpg.Record
    fresh: asyncpg.Record
    outbox: asyncpg.Record
    maintenance: list[asyncpg.Record]


async def read_db(conn: asyncpg.Connection, now: datetime, window_s: float, timeout_s: float) -> DbReading:
    since = now - timedelta(seconds=window_s)
    sync = await conn.fetchrow(Q["recent_requests"], since, timeout=timeout_s)
    fresh = await conn.fetchrow(Q["recent_freshness"], since, now - timedelta(days=1), timeout=timeout_s)
    outbox = await conn.fetchrow(Q["outbox_state"], timeout=timeout_s)
    maintenance: list[asyncpg.Record] = []
    if await conn.fetchval(Q["has_maintenance_windows"], timeout=timeout_s):
        maintenance = await conn.fetch(Q["maintenance_windows"], now, timeout=timeout_s)
    return DbReading(sync, fresh, outbox, maintenance)


def to_signals(
    now: datetime, broker: bool, breaker_state: str, db: DbReading | None, usage: tuple[int, int]
) -> Signals:
    if db is None:
        return Signals(
            broker_reachable=broker,
            breaker_state=breaker_state,
            db_reachable=False,
            usage_requests=usage[0],
            usage_errors_5xx=usage[1],
        )
    last = db.fresh["last_minute"]
    oldest = db.outbox["oldest"]
    return Signals(
        broker_reachable=broker,
        breaker_state=breaker_state,
        db_reachable=True,
        sync_requests=db.sync["requests"],
        sync_errors_5xx=db.sync["errors_5xx"],
        sync_within_500ms=db.sync["within_500ms"],
        captured_events=db.sync["captured"],
        ledgered_events=db.fresh["events"],
        ledger_lag_max_ms=db.fresh["lag_max_ms"],
        # the minute row is stamped at its start: its events are at most a minute younger
        last_ledgered_age_s=None if last is None else max(0.0, (now - last).total_seconds() - 60),
        outbox_pending=db.outbox["pending"],
        outbox_parked=db.outbox["parked"],
        outbox_oldest_age_s=0.0 if oldest is None else max(0.0, (now - oldest).total_seconds()),
        usage_requests=usage[0],
        usage_errors_5xx=usage[1],
        maintenance_active=any(m["starts_at"] <= now < m["ends_at"] for m in db.maintenance),
    )


def utcnow() -> datetime:
    return datetime.now(UTC)


def monotonic() -> float:
    return time.monotonic()
