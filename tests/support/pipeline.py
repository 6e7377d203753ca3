"""Helpers for tests that run the pipeline's components as real processes against the
session's database and topics (tests/conftest.py `settings`)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import orjson
from confluent_kafka import Producer
from opsmantik import sites
from opsmantik.config import Settings
from opsmantik.kafka.settings import producer_config

ROOT = Path(__file__).resolve().parents[2]
OPSMANTIK = str(ROOT / ".venv" / "bin" / "opsmantik")


def env_for(settings: Settings, **extra: object) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "OPSMANTIK_DATABASE_URL": settings.database_url,
            "OPSMANTIK_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "OPSMANTIK_TOPIC": settings.topic,
            "OPSMANTIK_BILLABLE_TOPIC": settings.billable_topic,
            "OPSMANTIK_TOPIC_PARTITIONS": str(settings.topic_partitions),
            "OPSMANTIK_WORKER_GROUP": settings.worker_group,
            "OPSMANTIK_WORKER_METRICS_PORT": "0",
            "OPSMANTIK_RELAY_METRICS_PORT": "0",
            "OPSMANTIK_DB_POOL_MAX": "3",
        }
    )
    env.update({f"OPSMANTIK_{k.upper()}": str(v) for k, v in extra.items()})
    return env


@dataclass
class Proc:
    """A component running as a real process; its output goes to a log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @classmethod
    def start(cls, settings: Settings, log_dir: Path, *args: str, **env: object) -> Proc:
        log = log_dir / f"{args[0]}-{time.monotonic_ns()}.log"
        out = log.open("wb")
        popen = subprocess.Popen(
            [OPSMANTIK, *args], env=env_for(settings, **env), stdout=out, stderr=subprocess.STDOUT, cwd=ROOT
        )
        return cls(args[0], popen, log)

    def kill(self) -> None:
        """SIGKILL: no cleanup, no offset commit, no transaction end."""
        if self.popen.poll() is None:
            os.kill(self.popen.pid, signal.SIGKILL)
        self.popen.wait(10)

    def stop(self, timeout_s: float = 20.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.popen.returncode

    def tail(self, n: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])


async def start_gateway(
    settings: Settings, log_dir: Path, port: int, timeout_s: float = 30.0, **env: object
) -> Proc:
    """The gateway as a real process on `port`, once its /healthz answers 200."""
    import aiohttp

    proc = Proc.start(settings, log_dir, "gateway", "--port", str(port), **env)

    async def up() -> bool:
        assert proc.popen.poll() is None, proc.tail()
        try:
            async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/healthz") as r:
                return r.status == 200
        except aiohttp.ClientError:
            return False

    await wait_for(up, timeout_s, 0.1, "gateway /healthz")
    return proc


def message(
    site_id: uuid.UUID,
    event_id: str,
    *,
    quantity: int = 1,
    path: str = "kafka",
    occurred_at: datetime | None = None,
    received_at: datetime | None = None,
    properties: dict[str, object] | None = None,
) -> bytes:
    """An ingest message exactly as schemas/event.v1.json has it (what the gateway
    produces)."""
    now = datetime.now(UTC)
    occurred = (occurred_at or now).astimezone(UTC)
    return orjson.dumps(
        {
            "v": 1,
            "site_id": str(site_id),
            "event_id": event_id,
            "type": "api_call",
            "occurred_at": occurred.isoformat(timespec="microseconds"),
            "usage_month": occurred.date().replace(day=1).isoformat(),
            "quantity": quantity,
            "properties": properties,
            "received_at": (received_at or now).isoformat(timespec="microseconds"),
            "path": path,
            "gateway_status": "fallback" if path == "fallback" else "accepted",
        }
    )


def produce(settings: Settings, msgs: list[tuple[bytes, bytes]], topic: str | None = None) -> None:
    """Produce (key, value) pairs durably (acks=all) and wait for every delivery."""
    p = Producer(producer_config(settings))
    errors: list[object] = []
    for key, value in msgs:
        p.produce(
            topic or settings.topic,
            value,
            key,
            on_delivery=lambda err, _m: errors.append(err) if err else None,
        )
        p.poll(0)
    assert p.flush(30) == 0
    assert not errors, errors


async def wait_for(
    check: Callable[[], Awaitable[bool]],
    timeout_s: float = 30.0,
    every_s: float = 0.05,
    what: str = "condition",
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def count_messages(settings: Settings, topic: str, key: bytes, timeout_s: float = 20.0) -> int:
    """How many messages of this site key the topic holds (read from the start to the end); a
    key `site/event_id` (opsmantik.kafka.settings.message_key) counts for its site."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"count-{uuid.uuid4()}",
            "enable.auto.commit": False,
        }
    )
    try:
        ends = {
            p: c.get_watermark_offsets(TopicPartition(topic, p), 10)[1]
            for p in range(settings.topic_partitions)
        }
        c.assign([TopicPartition(topic, p, 0) for p, end in ends.items() if end > 0])
        done: dict[int, int] = {}
        count = 0
        deadline = time.monotonic() + timeout_s
        while len(done) < sum(1 for e in ends.values() if e > 0) and time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is None or msg.error():
                continue
            count += msg.key().split(b"/", 1)[0] == key
            if msg.offset() + 1 >= ends[msg.partition()]:
                done[msg.partition()] = 1
        assert time.monotonic() < deadline, "topic not read to its end in time"
        return count
    finally:
        c.close()


async def insert_outbox(pool: object, site_id: uuid.UUID, event_ids: list[str]) -> None:
    """Outbox rows exactly as the gateway's fallback path writes them."""
    now = datetime.now(UTC)
    await pool.executemany(  # type: ignore[attr-defined]
        "INSERT INTO ingest_fallback_buffer (site_id, event_id, payload, received_at) "
        "VALUES ($1, $2, $3, $4)",
        [(site_id, e, message(site_id, e, path="fallback", received_at=now), now) for e in event_ids],
    )


async def new_site_id(pool: asyncpg.Pool) -> uuid.UUID:
    """A site with no quota, for tests that only need somewhere to put events."""
    async with pool.acquire() as conn:
        return (await sites.create_site(conn, f"t-{uuid.uuid4().hex[:8]}")).site_id


async def ledger_count(pool: asyncpg.Pool, site: uuid.UUID) -> int:
    return await pool.fetchval("SELECT count(*) FROM ingest_idempotency WHERE site_id = $1", site)


def ledgered(pool: asyncpg.Pool, site: uuid.UUID, n: int) -> Callable[[], Awaitable[bool]]:
    """A `wait_for` check: the site has at least n ledger rows."""

    async def check() -> bool:
        return await ledger_count(pool, site) >= n

    return check
