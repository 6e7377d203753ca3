"""Scale-out on the shared single-broker stack (the bounded part `make test` runs; the 3-broker
scenarios are `make cluster`): a hot tenant over every partition with two workers, two
gateways sharing a site's rate limit, topics that are too small, metrics on ephemeral ports."""

from __future__ import annotations

import asyncio
import random
import re
import subprocess
from pathlib import Path

import aiohttp
import asyncpg
import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from opsmantik.config import Settings
from opsmantik.sites import create_site_with_key

from tests.support.environment import module_environment
from tests.support.gateway import auth, event, gateway  # noqa: F401 - fixture
from tests.support.pipeline import OPSMANTIK, env_for, opsmantik_process, wait_for
from tests.support.scale import (
    produce_on,
    reconcile_drift,
    wait_members,
)

pytestmark = pytest.mark.integration

settings, pool = module_environment()
METRICS_LINE = re.compile(rb"(?:worker|relay) metrics on http://([\d.]+):(\d+)/metrics")


def caught_up(settings: Settings) -> bool:
    """The worker group's committed offsets reached the end of every partition (blocking)."""
    c = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": settings.worker_group,
            "enable.auto.commit": False,
        }
    )
    try:
        parts = [TopicPartition(settings.topic, p) for p in range(settings.topic_partitions)]
        committed = {tp.partition: tp.offset for tp in c.committed(parts, timeout=10)}
        ends = {
            p: c.get_watermark_offsets(TopicPartition(settings.topic, p), 10)[1]
            for p in range(settings.topic_partitions)
        }
        return all(committed[p] == ends[p] for p in ends if ends[p] > 0)
    finally:
        c.close()


async def test_hot_tenant_over_all_partitions_two_workers_exact_split(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    async with pool.acquire() as conn:
        site = (await create_site_with_key(conn, "hot", monthly_quota=1000)).site_id
    # metrics port 0: two workers on one host, each on an ephemeral port it reports.
    # Each in a log directory of its own: its log names its own port.
    workers = [
        opsmantik_process(
            settings, tmp_path / f"w{i}", "worker", "worker", worker_metrics_port=0, worker_batch=200
        )
        for i in range(2)
    ]
    relays = [
        opsmantik_process(settings, tmp_path / f"r{i}", "relay", "relay", relay_metrics_port=0)
        for i in range(2)
    ]
    for proc in workers + relays:
        proc.start()
    try:
        members = await wait_members(settings, 2)
        assert all(members), members
        ports = set()
        for proc in workers + relays:
            match = METRICS_LINE.search(proc.log.read_bytes())
            assert match, proc.tail()
            port = int(match[2])
            ports.add(port)
            async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/healthz") as r:
                health = await r.json()
            assert health["metrics_port"] == port and health["service"] == proc.name
        assert len(ports) == 4 and 0 not in ports  # four services, one host, four ephemeral ports

        n_parts = settings.topic_partitions
        originals = [(i % n_parts, site, f"hot-{i}") for i in range(3000)]
        # 1,000 of them again, each on another partition than its first copy.
        copies = [((p + 1 + i % (n_parts - 1)) % n_parts, s, e) for i, (p, s, e) in enumerate(originals[::3])]
        placed = originals + copies
        random.Random(11).shuffle(placed)  # a copy may well be ledgered before its original
        assert await asyncio.to_thread(produce_on, settings, placed) == 4000

        async def ledgered_and_consumed() -> bool:
            n = await pool.fetchval("SELECT count(*) FROM ingest_idempotency WHERE site_id = $1", site)
            return n >= 3000 and await asyncio.to_thread(caught_up, settings)

        await wait_for(ledgered_and_consumed, 90, 0.5, what="3,000 events ledgered, 4,000 consumed")
        row = await pool.fetchrow(
            "SELECT count(*) AS n, count(DISTINCT event_id) AS d, "
            "count(*) FILTER (WHERE billing_class = 'included') AS inc, "
            "count(*) FILTER (WHERE billing_class = 'overlimit') AS over, "
            "count(DISTINCT kafka_partition) AS parts FROM ingest_idempotency WHERE site_id = $1",
            site,
        )
        assert (row["n"], row["d"], row["inc"], row["over"]) == (3000, 3000, 1000, 2000)
        assert row["parts"] == n_parts
        inv = await pool.fetchrow(
            "SELECT events, overlimit_events FROM site_usage_monthly WHERE site_id = $1", site
        )
        assert (inv["events"], inv["overlimit_events"]) == (3000, 2000)
        assert await reconcile_drift(pool) == 0
        # Both workers ledgered part of the site (one freshness row per worker instance).
        assert await pool.fetchval("SELECT count(DISTINCT instance) FROM slo_freshness") == 2
    finally:
        for proc in workers + relays:
            assert proc.stop() == 0, proc.tail()


async def test_gateway_spreads_one_site_over_partitions(
    gateway,  # noqa: F811 - the fixture
    pool: asyncpg.Pool,
    settings: Settings,
) -> None:
    async with pool.acquire() as conn:
        key = (await create_site_with_key(conn, "spread")).api_key
    parts: set[int] = set()
    for i in range(40):  # 40 requests of one site: spread over the partitions
        r = await gateway.client.post("/api/sync", data=orjson.dumps(event(f"s{i}")), headers=auth(key))
        assert r.status == 200
        parts |= {x["receipt"]["partition"] for x in (await r.json())["results"]}
    assert len(parts) >= settings.topic_partitions - 1, parts
    # A batch stays on one partition (one leader acks the request).
    body = orjson.dumps({"events": [event(f"b{i}") for i in range(30)]})
    r = await gateway.client.post("/api/sync", data=body, headers=auth(key))
    assert len({x["receipt"]["partition"] for x in (await r.json())["results"]}) == 1


def test_migrate_refuses_a_topic_with_fewer_partitions(settings: Settings) -> None:
    short = f"{settings.topic}.short"
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    admin.create_topics([NewTopic(short, 2, 1)])[short].result(30)
    try:
        done = subprocess.run(
            [OPSMANTIK, "migrate"],
            env=env_for(settings, topic=short),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 1, done.stdout + done.stderr
        assert f"topic {short} has 2 partitions, fewer than the configured 6" in done.stderr
        ok = subprocess.run(
            [OPSMANTIK, "migrate"],
            env=env_for(settings, topic=short, topic_partitions=2),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert ok.returncode == 0, ok.stderr  # at its edge: as many partitions as configured is fine
    finally:
        admin.delete_topics([short])
