"""Helpers of the scale-out tests (tests/integration/test_scale_out.py, tests/cluster/): workers
in one group, messages placed on chosen partitions, gateway processes (tests/support/process.py)
and an open-loop load."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import asyncpg
import orjson
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from opsmantik.config import Settings
from opsmantik.kafka.settings import message_key, producer_config

from tests.support.pipeline import env_for, message
from tests.support.process import Process


def group_assignment(settings: Settings) -> list[set[int]]:
    """The ingest-topic partitions each member of the worker group holds (blocking)."""
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    futures = admin.describe_consumer_groups([settings.worker_group], request_timeout=10)
    try:
        group = futures[settings.worker_group].result(15)
    except Exception:  # noqa: BLE001 - the group does not exist yet
        return []
    members = []
    for m in group.members:
        parts = {
            tp.partition
            for tp in (m.assignment.topic_partitions if m.assignment else [])
            if tp.topic == settings.topic
        }
        members.append(parts)
    return members


async def wait_members(settings: Settings, n: int, timeout_s: float = 90.0) -> list[set[int]]:
    """Until n members hold every partition between them."""
    deadline = time.monotonic() + timeout_s
    members: list[set[int]] = []
    while time.monotonic() < deadline:
        members = await asyncio.to_thread(group_assignment, settings)
        held = set().union(*members) if members else set()
        if len(members) == n and all(members) and len(held) == settings.topic_partitions:
            return members
        await asyncio.sleep(0.5)
    raise AssertionError(f"group never had {n} members holding every partition: {members}")


def produce_on(
    settings: Settings, placed: Iterable[tuple[int, uuid.UUID, str]], occurred_at: datetime | None = None
) -> int:
    """Produce event.v1 messages on chosen partitions, acks=all; returns how many (blocking)."""
    p = Producer(producer_config(settings))
    errors: list[object] = []
    n = 0
    for partition, site, event_id in placed:
        p.produce(
            settings.topic,
            message(site, event_id, occurred_at=occurred_at),
            message_key(settings, site, event_id),
            partition=partition,
            on_delivery=lambda err, _m: errors.append(err) if err else None,
        )
        p.poll(0)
        n += 1
    assert p.flush(60) == 0
    assert not errors, errors[:3]
    return n


async def reconcile_drift(pool: asyncpg.Pool) -> int:
    """Sum over every site and month of |invoice - ledger| (events and quantity)."""
    return await pool.fetchval("""
        WITH l AS (SELECT site_id, billing_month AS month, count(*) AS ev, sum(quantity) AS q,
                          count(*) FILTER (WHERE billing_class = 'overlimit') AS oe
                   FROM ingest_idempotency GROUP BY 1, 2)
        SELECT coalesce(sum(abs(coalesce(u.events, 0) - coalesce(l.ev, 0))
                          + abs(coalesce(u.quantity, 0) - coalesce(l.q, 0))
                          + abs(coalesce(u.overlimit_events, 0) - coalesce(l.oe, 0))), 0)
        FROM site_usage_monthly u FULL JOIN l ON l.site_id = u.site_id AND l.month = u.month""")


def launch_gateway(settings: Settings, log_dir: Path, port: int, **env: object) -> Process:
    """`opsmantik gateway --port port` as a started Process (not yet answering: see health())."""
    args = ["gateway", "--port", str(port)]
    return Process.opsmantik(f"gateway-{port}", args, env_for(settings, **env), log_dir).start()


def url_of(gateway: Process) -> str:
    """A gateway process's base URL, from the --port it was started with."""
    return f"http://127.0.0.1:{gateway.argv[list(gateway.argv).index('--port') + 1]}"


async def health(session: aiohttp.ClientSession, gateway: Process) -> dict[str, object] | None:
    """The gateway's /healthz document, or None while it does not answer 200."""
    try:
        async with session.get(url_of(gateway) + "/healthz", timeout=aiohttp.ClientTimeout(total=1)) as r:
            return await r.json() if r.status == 200 else None
    except (aiohttp.ClientError, TimeoutError):
        return None


async def wait_gateways_live(gateways: list[Process], n: int, timeout_s: float = 60.0) -> None:
    """Until every gateway answers /healthz and sees n live gateways in the registry."""
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            states = [await health(session, g) for g in gateways]
            if all(h is not None and h.get("gateways_live") == n for h in states):
                return
            for g in gateways:
                g.check_alive()
            await asyncio.sleep(0.2)
    raise AssertionError(f"gateways never saw {n} live: {[g.tail(5) for g in gateways]}")


@dataclass
class Answer:
    at: float  # seconds since the load started, when the request was actually sent
    status: int  # 0: no answer (connection refused or reset)
    body: dict[str, object] | None = None


@dataclass
class OpenLoad:
    """Requests sent on a fixed schedule (open loop: a slow answer does not slow the sender)."""

    rate: float
    seconds: float
    answers: list[Answer] = field(default_factory=list)

    async def run(self, pick: object, api_key: str, make_body: object) -> list[Answer]:
        """pick(i, t) -> base url for request i sent at t; make_body(i) -> the JSON document."""
        headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
        conn = aiohttp.TCPConnector(limit=200)
        async with aiohttp.ClientSession(connector=conn) as session:

            async def one(i: int) -> None:
                # The real send time, not the scheduled one: on a busy host the sender lags its schedule.
                t = time.monotonic() - t0
                url = pick(i, t)  # type: ignore[operator]
                try:
                    async with session.post(
                        url + "/api/sync",
                        data=orjson.dumps(make_body(i)),  # type: ignore[operator]
                        headers=headers,
                        timeout=aiohttp.ClientTimeout(total=10),
                    ) as r:
                        body = await r.json() if r.status == 200 else None
                        self.answers.append(Answer(t, r.status, body))
                except (aiohttp.ClientError, TimeoutError):
                    self.answers.append(Answer(t, 0))

            t0 = time.monotonic()
            tasks = []
            total = int(self.rate * self.seconds)
            for i in range(total):
                t = i / self.rate
                delay = t0 + t - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(one(i)))
            await asyncio.gather(*tasks)
        return self.answers


def event_doc(event_id: str) -> dict[str, object]:
    return {
        "event_id": event_id,
        "type": "api_call",
        "occurred_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
    }
