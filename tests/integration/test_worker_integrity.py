"""Issue 9's reproductions, each a regression test against the real Kafka, Postgres, gateway
and worker processes: no acknowledged event is lost, whatever arrives on the topic."""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import asyncpg
import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition
from opsmantik import sites
from opsmantik.billing import reconcile
from opsmantik.config import Settings
from opsmantik.kafka.topics import ensure_topics

from tests.support.pipeline import (
    Pipeline,
    Process,
    env_for,
    message,
    opsmantik_process,
    pipeline_fixture,
    produce,
    wait_for,
)

pytestmark = pytest.mark.integration
pipeline = pipeline_fixture()


async def new_key(pool: asyncpg.Pool) -> sites.NewKey:
    async with pool.acquire() as conn:
        return await sites.create_site_with_key(conn, f"i-{uuid.uuid4().hex[:8]}")


def assert_healthy(proc: Process) -> None:
    """Still the first process, and no agent crash or restart in its log."""
    assert proc.alive(), proc.tail()
    log = proc.log.read_text(errors="replace")
    for sign in ("Traceback", "crashed", "WATCHDOG", "giving up"):
        assert sign not in log, proc.tail(60)


async def test_escaped_nul_text_is_ledgered(
    settings: Settings, pool: asyncpg.Pool, pipeline: Pipeline
) -> None:
    """Reproduction 1: the characters backslash, u, 0, 0, 0, 0 are text, not a NUL: the gateway
    accepted them, so the worker must ledger them (it dead-lettered them)."""
    key = await new_key(pool)
    props = {"log": "raw \\u0000 escape", "path": "C:\\u0000\\x"}
    body = {
        "event_id": "esc-1",
        "type": "log",
        "occurred_at": datetime.now(UTC).isoformat(),
        "properties": props,
    }
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            f"{pipeline.url}/api/sync", json=body, headers={"Authorization": f"Bearer {key.api_key}"}
        ) as r,
    ):
        assert r.status == 200, await r.text()
        assert (await r.json())["results"][0]["status"] == "accepted"

    async def ledgered() -> bool:
        return (
            await pool.fetchval("SELECT count(*) FROM ingest_idempotency WHERE site_id = $1", key.site_id)
            == 1
        )

    await wait_for(ledgered, 20, what="the escaped-NUL event in the ledger")
    stored = await pool.fetchval(
        "SELECT properties::text FROM ingest_idempotency WHERE site_id = $1", key.site_id
    )
    assert orjson.loads(stored) == props
    assert (
        await pool.fetchval("SELECT count(*) FROM ingest_dead_letter WHERE site_id = $1", str(key.site_id))
        == 0
    )
    assert_healthy(pipeline.worker)


async def test_undecodable_messages_do_not_stop_the_ledger(
    settings: Settings, pool: asyncpg.Pool, pipeline: Pipeline
) -> None:
    """Reproduction 2: 3 valid, then messages that made decode or the dead-letter insert raise
    (path a list, a year-1 time with an offset, NUL in an unknown field name), then 3 valid,
    all on the site's partition: the 6 valid ones are ledgered, each bad one dead-lettered
    once, the worker never restarts, and a later event of another site is ledgered too."""
    key = await new_key(pool)
    site = key.site_id

    def bad(**over: object) -> bytes:
        doc = orjson.loads(message(site, f"bad-{uuid.uuid4().hex[:6]}"))
        doc.update(over)
        return orjson.dumps(doc)

    hostile = [
        bad(path=["kafka"]),
        bad(occurred_at="0001-01-01T00:00:00+01:00"),
        bad(**{"evil\x00field": 1}),
        bad(gateway_status={"x": 1}),
        b"\xff\xfe",
        b"",
    ]
    valid = [message(site, f"ok-{i}") for i in range(6)]
    k = str(site).encode()
    produce(settings, [(k, v) for v in valid[:3] + hostile + valid[3:]])

    async def done() -> bool:
        ledger = await pool.fetchval("SELECT count(*) FROM ingest_idempotency WHERE site_id = $1", site)
        return ledger == 6

    await wait_for(done, 30, what="the six valid neighbours in the ledger")
    partition = await site_partition(pool, site)
    first, last = await pool.fetchrow(
        "SELECT min(kafka_offset), max(kafka_offset) FROM ingest_idempotency WHERE site_id = $1", site
    )
    dead = await pool.fetch(
        "SELECT kafka_offset, reason FROM ingest_dead_letter WHERE topic = $1 AND "
        "kafka_partition = $2 AND kafka_offset BETWEEN $3 AND $4 ORDER BY kafka_offset",
        settings.topic,
        partition,
        first,
        last,
    )
    # exactly the hostile messages, each once, at the offsets between the valid ones
    assert [r["kafka_offset"] for r in dead] == list(range(first + 3, first + 3 + len(hostile))), dead

    other = await new_key(pool)
    produce(settings, [(str(other.site_id).encode(), message(other.site_id, "after"))])
    await wait_for(lambda: _has(pool, other.site_id, "after"), 20, what="another site's next event")
    assert_healthy(pipeline.worker)


async def site_partition(pool: asyncpg.Pool, site: uuid.UUID) -> int:
    (partition,) = {
        r[0]
        for r in await pool.fetch("SELECT kafka_partition FROM ingest_idempotency WHERE site_id = $1", site)
    }
    return partition


async def _has(pool: asyncpg.Pool, site: uuid.UUID, event_id: str) -> bool:
    return (
        await pool.fetchval(
            "SELECT count(*) FROM ingest_idempotency WHERE site_id = $1 AND event_id = $2", site, event_id
        )
        == 1
    )


async def test_invoice_sums_go_past_bigint(
    settings: Settings, pool: asyncpg.Pool, pipeline: Pipeline
) -> None:
    """Reproduction 3: a site whose monthly quantity passes 2**63 - 1 (about 9.3 million events
    at the maximum quantity). Pre-seeded invoice row 1 below the edge, then one event of 10**12."""
    key = await new_key(pool)
    month = datetime.now(UTC).date().replace(day=1)
    seeded = 2**63 - 1 - 10**12 + 1  # + 10**12 = 2**63: one past bigint
    await pool.execute(
        "INSERT INTO site_usage_monthly (site_id, month, events, quantity) VALUES ($1, $2, 1, $3)",
        key.site_id,
        month,
        seeded,
    )
    produce(settings, [(str(key.site_id).encode(), message(key.site_id, "max-q", quantity=10**12))])
    await wait_for(lambda: _has(pool, key.site_id, "max-q"), 20, what="the maximal event in the ledger")
    quantity = await pool.fetchval(
        "SELECT quantity FROM site_usage_monthly WHERE site_id = $1 AND month = $2", key.site_id, month
    )
    assert int(quantity) == 2**63
    async with pool.acquire() as conn:
        report = await reconcile.reconcile_month(conn, month)
    mine = next(s for s in report.sites if s.site_id == key.site_id)
    # the seeded row has no ledger rows behind it: reconcile shows exactly that, past bigint too
    assert (mine.invoice_quantity, mine.ledger_quantity, mine.drift("quantity")) == (2**63, 10**12, seeded)
    assert_healthy(pipeline.worker)


def committed_offset(settings: Settings, partition: int) -> int:
    c = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": settings.worker_group,
            "enable.auto.commit": False,
        }
    )
    try:
        (tp,) = c.committed([TopicPartition(settings.topic, partition)], 10)
        return tp.offset
    finally:
        c.close()


async def test_a_raising_batch_handler_stops_the_worker_and_nothing_is_skipped(
    settings: Settings, pool: asyncpg.Pool, pipeline: Pipeline, tmp_path: Path
) -> None:
    """Fail-stop, never skip: with a planted bug the handler raises on a batch; the worker exits
    non-zero without committing past the batch, and the next (sound) worker ledgers it and its
    neighbours. Its own consumer group and topic, so the module's worker is not involved."""
    s = dataclasses.replace(
        settings, topic=f"{settings.topic}.failstop", worker_group=f"{settings.worker_group}-fs"
    )
    ensure_topics(s)
    key = await new_key(pool)
    k = str(key.site_id).encode()
    produce(s, [(k, message(key.site_id, f"pre-{i}")) for i in range(3)])
    proc = Process(
        "raising",
        [sys.executable, "-m", "tests.integration.raising_worker"],
        env_for(s),
        tmp_path / "raising.log",
    ).start()
    try:
        await wait_for(lambda: _count(pool, key.site_id, 3), 30, what="the first three events")
        partition = await site_partition(pool, key.site_id)

        async def committed_three() -> bool:
            return await asyncio.to_thread(committed_offset, s, partition) >= 3

        await wait_for(committed_three, 20, 0.5, "the first three events committed")
        assert committed_offset(s, partition) == 3
        produce(s, [(k, message(key.site_id, e)) for e in ("boom-1", "post-1", "post-2", "post-3", "post-4")])
        assert await asyncio.to_thread(proc.popen.wait, 60) == 1, proc.tail(60)  # type: ignore[union-attr]
    finally:
        proc.kill()
    assert committed_offset(s, partition) == 3  # nothing committed past the failed batch
    assert await pool.fetchval("SELECT count(*) FROM ingest_idempotency WHERE site_id = $1", key.site_id) == 3

    # A worker alone on this topic: the module's pipeline relay drains the database's outbox.
    sound = opsmantik_process(s, tmp_path, "worker", "worker").start()
    try:
        await wait_for(lambda: _count(pool, key.site_id, 8), 40, what="the replayed batch in the ledger")
        assert_healthy(sound)
    finally:
        assert sound.stop() == 0, sound.tail()


async def _count(pool: asyncpg.Pool, site: uuid.UUID, n: int) -> bool:
    return await pool.fetchval("SELECT count(*) FROM ingest_idempotency WHERE site_id = $1", site) == n
