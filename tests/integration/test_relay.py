"""The outbox relay as real processes (and in-process for its metrics and parking), with a
real worker process ledgering what it produces."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import uuid
from datetime import UTC, datetime

import aiohttp
import asyncpg
import orjson
import pytest
from opsmantik.config import Settings
from opsmantik.relay import relay as relay_mod
from opsmantik.relay.relay import Relay

from tests.support.environment import module_environment
from tests.support.pipeline import (
    OPSMANTIK,
    Pipeline,
    Process,
    count_messages,
    env_for,
    free_port,
    insert_outbox,
    ledger_count,
    ledgered,
    message,
    new_site_id,
    opsmantik_process,
    pipeline_fixture,
    produce,
    wait_for,
)

pytestmark = pytest.mark.integration


settings, pool = module_environment()
# The relays are what these tests start, stop and kill: the pipeline runs without its own.
pipeline = pipeline_fixture("worker", "audit", relay_in_tests=True)


@pytest.fixture
def logs(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    return tmp_path_factory.mktemp("relay")


async def outbox_left(pool: asyncpg.Pool, site: uuid.UUID) -> int:
    return await pool.fetchval("SELECT count(*) FROM ingest_fallback_buffer WHERE site_id = $1", site)


def drained_and_ledgered(pool: asyncpg.Pool, site: uuid.UUID, n: int):  # noqa: ANN201
    async def check() -> bool:
        ledger = await pool.fetchval("SELECT count(*) FROM ingest_idempotency WHERE site_id = $1", site)
        return ledger >= n and await outbox_left(pool, site) == 0

    return check


async def assert_once_each(pool: asyncpg.Pool, site: uuid.UUID, n: int) -> None:
    row = await pool.fetchrow(
        "SELECT count(*) AS n, count(DISTINCT event_id) AS d FROM ingest_idempotency WHERE site_id = $1", site
    )
    assert (row["n"], row["d"]) == (n, n)
    events = await pool.fetchval("SELECT sum(events) FROM site_usage_monthly WHERE site_id = $1", site)
    assert events == n


async def test_one_event_via_kafka_and_via_outbox_is_ledgered_once(
    pipeline: Pipeline, settings: Settings, pool: asyncpg.Pool, logs
) -> None:  # noqa: ANN001
    site = await new_site_id(pool)
    produce(settings, [(str(site).encode(), message(site, "both-1"))])
    await insert_outbox(pool, site, ["both-1", "only-outbox"])
    metrics_port = free_port()
    relay = opsmantik_process(settings, logs, "relay", "relay", relay_metrics_port=metrics_port).start()
    try:
        await wait_for(drained_and_ledgered(pool, site, 2), what="outbox drained, 2 ledger rows")

        async def metrics_show_drained() -> bool:
            try:
                async with (
                    aiohttp.ClientSession() as s,
                    s.get(f"http://127.0.0.1:{metrics_port}/metrics") as r,
                ):
                    text = await r.text()
            except aiohttp.ClientError:
                return False
            lines = dict(x.rsplit(" ", 1) for x in text.splitlines() if x.startswith("opsmantik_outbox"))
            return (
                float(lines.get("opsmantik_outbox_drained_total", 0)) >= 2
                and lines.get("opsmantik_outbox_depth") == "0.0"
                and "opsmantik_outbox_oldest_age_seconds" in lines
            )

        await wait_for(metrics_show_drained, 10, 0.2, "relay metrics: drained 2, depth 0")
    finally:
        assert relay.stop() == 0, relay.tail()
    await assert_once_each(pool, site, 2)
    paths = dict(await pool.fetch("SELECT event_id, path FROM ingest_idempotency WHERE site_id = $1", site))
    assert paths["only-outbox"] == "fallback"


async def test_relay_killed_between_produce_and_delete(
    pipeline: Pipeline, settings: Settings, pool: asyncpg.Pool, logs
) -> None:  # noqa: ANN001
    site = await new_site_id(pool)
    ids = [f"k-{i}" for i in range(200)]
    await insert_outbox(pool, site, ids)
    blocker = await asyncpg.connect(settings.database_url)
    relay = None
    try:
        tx = blocker.transaction()
        await tx.start()
        # SHARE mode lets the relay claim (FOR UPDATE) and produce, but blocks its DELETE.
        await blocker.execute("LOCK TABLE ingest_fallback_buffer IN SHARE MODE")
        relay = opsmantik_process(settings, logs, "relay", "relay").start()

        async def produced_not_deleted() -> bool:
            n = await pool.fetchval("SELECT count(*) FROM ingest_idempotency WHERE site_id = $1", site)
            return n == 200

        await wait_for(produced_not_deleted, what="relay produced all 200 (the worker ledgered them)")
        assert await outbox_left(pool, site) == 200  # produced, not yet deleted
        relay.kill()
        await tx.rollback()
    finally:
        await blocker.close()
        if relay:
            relay.kill()
    relay = opsmantik_process(settings, logs, "relay", "relay").start()
    try:
        await wait_for(drained_and_ledgered(pool, site, 200), what="restarted relay drained the outbox")
    finally:
        assert relay.stop() == 0, relay.tail()
    await assert_once_each(pool, site, 200)
    # Every row went to Kafka twice (before and after the kill); the ledger kept one.
    assert await asyncio.to_thread(count_messages, settings, settings.topic, str(site).encode()) == 400
    done = subprocess.run(
        [OPSMANTIK, "reconcile", "--month", datetime.now(UTC).strftime("%Y-%m"), "--json"],
        env=env_for(settings),
        capture_output=True,
        timeout=60,
    )
    report = orjson.loads(done.stdout)
    assert done.returncode == 0 and report["drifting_sites"] == []
    assert str(site) in {s["site_id"] for s in report["sites"]}


async def drained_by(port: int) -> float:
    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/metrics") as r:
        text = await r.text()
    return float(
        dict(x.rsplit(" ", 1) for x in text.splitlines() if x.startswith("opsmantik_outbox_drained_total "))[
            "opsmantik_outbox_drained_total"
        ]
    )


async def test_two_relays_drain_together_without_producing_a_row_twice(
    pipeline: Pipeline, settings: Settings, pool: asyncpg.Pool, logs
) -> None:  # noqa: ANN001
    site = await new_site_id(pool)
    await insert_outbox(pool, site, [f"p-{i}" for i in range(600)])
    blocker = await asyncpg.connect(settings.database_url)
    relays: list[Process] = []
    ports = [free_port(), free_port()]
    try:
        tx = blocker.transaction()
        await tx.start()
        # SHARE mode lets each relay claim a batch (FOR UPDATE) and produce it, but not delete it:
        # each then holds its claim. Two batches (50 rows) on Kafka at once are possible only if
        # the second relay claimed other rows while the first held its own: a parallel drain.
        # (Without SKIP LOCKED the second would queue behind the first's row locks: 25.)
        await blocker.execute("LOCK TABLE ingest_fallback_buffer IN SHARE MODE")
        relays = [
            opsmantik_process(
                settings, logs, f"relay-{port}", "relay", relay_batch=25, relay_metrics_port=port
            ).start()
            for port in ports
        ]
        await wait_for(ledgered(pool, site, 50), what="both relays holding a produced batch at once")
        await asyncio.sleep(1.0)  # the test: a window in which no third batch may appear
        assert await ledger_count(pool, site) == 50  # each is blocked on its delete: no third batch
        await tx.rollback()
        await wait_for(drained_and_ledgered(pool, site, 600), what="two relays drained 600 rows")
        for port in ports:  # both kept draining once released
            assert await drained_by(port) >= 25
    finally:
        await blocker.close()
        for r in relays:
            assert r.stop() == 0, r.tail()
    await assert_once_each(pool, site, 600)
    assert await asyncio.to_thread(count_messages, settings, settings.topic, str(site).encode()) == 600


async def test_in_process_drain_parks_a_message_the_broker_refuses(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    site = await new_site_id(pool)
    await insert_outbox(pool, site, ["fine-1"])
    await pool.execute(
        "INSERT INTO ingest_fallback_buffer (site_id, event_id, payload, received_at) "
        "VALUES ($1, 'huge', $2, now())",
        site,
        b"x" * 1_200_000,
    )
    relay = Relay(dataclasses.replace(settings, relay_batch=10), pool)
    before = relay_mod.DRAINED._value.get()
    try:
        # Other modules' rows may be claimed too; drain until this site's rows are settled.
        for _ in range(20):
            await relay.drain_once()
            if (
                await pool.fetchval(
                    "SELECT count(*) FROM ingest_fallback_buffer WHERE site_id = $1 AND parked_at IS NULL",
                    site,
                )
                == 0
            ):
                break
        await relay.refresh_metrics()
    finally:
        await relay.close()
    parked = await pool.fetchrow(
        "SELECT event_id, attempts, last_error FROM ingest_fallback_buffer WHERE site_id = $1", site
    )
    assert parked["event_id"] == "huge" and parked["attempts"] == 1 and "too large" in parked["last_error"]
    assert relay_mod.DRAINED._value.get() - before >= 1
    assert relay_mod.PARKED._value.get() >= 1
    assert relay_mod.DEPTH._value.get() == 0
    await pool.execute("DELETE FROM ingest_fallback_buffer WHERE site_id = $1", site)
