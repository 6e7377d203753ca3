"""The ledger worker as a real process (and the gateway as a real process for the
request-level cases) against the real Kafka and Postgres."""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import time
import uuid
from datetime import UTC, datetime, timedelta

import aiohttp
import asyncpg
import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition
from opsmantik import sites
from opsmantik.config import Settings

from tests.support.pipeline import (
    OPSMANTIK,
    ROOT,
    Pipeline,
    env_for,
    ledgered,
    message,
    pipeline_fixture,
    produce,
    wait_for,
)

pytestmark = pytest.mark.integration
pipeline = pipeline_fixture(reconcile_interval_s=1, usage_refresh_s=0.2)


async def new_site(pool: asyncpg.Pool, quota: int | None = None) -> sites.NewKey:
    async with pool.acquire() as conn:
        return await sites.create_site_with_key(conn, f"w-{uuid.uuid4().hex[:8]}", monthly_quota=quota)


def this_month() -> datetime:
    return datetime.now(UTC)


async def invoice(pool: asyncpg.Pool, site: uuid.UUID) -> asyncpg.Record | None:
    return await pool.fetchrow(
        "SELECT * FROM site_usage_monthly WHERE site_id = $1 AND month = $2",
        site,
        datetime.now(UTC).date().replace(day=1),
    )


async def post(session: aiohttp.ClientSession, base: str, api_key: str, body: object) -> dict:
    async with session.post(
        f"{base}/api/sync", json=body, headers={"Authorization": f"Bearer {api_key}"}
    ) as r:
        payload = await r.json()
        assert r.status == 200, payload
        return payload


def event(event_id: str, quantity: int = 1) -> dict[str, object]:
    return {
        "event_id": event_id,
        "type": "api_call",
        "quantity": quantity,
        "occurred_at": datetime.now(UTC).isoformat(),
    }


async def test_same_event_in_one_batch_in_two_messages(
    pipeline: Pipeline, settings: Settings, pool: asyncpg.Pool
) -> None:
    site = (await new_site(pool)).site_id
    key = str(site).encode()
    produce(
        settings,
        [(key, message(site, "dup-1")), (key, message(site, "dup-1")), (key, message(site, "other-1"))],
    )
    await wait_for(ledgered(pool, site, 2), what="2 ledger rows")
    produce(settings, [(key, message(site, "dup-1", quantity=7))])  # a re-send, later
    produce(settings, [(key, message(site, "marker"))])  # same partition: once in, dup-1 was seen
    await wait_for(ledgered(pool, site, 3), what="marker ledgered")
    rows = await pool.fetch(
        "SELECT event_id, quantity FROM ingest_idempotency WHERE site_id = $1 ORDER BY event_id", site
    )
    assert [(r["event_id"], r["quantity"]) for r in rows] == [("dup-1", 1), ("marker", 1), ("other-1", 1)]
    inv = await invoice(pool, site)
    assert inv is not None and (inv["events"], inv["quantity"]) == (3, 3)
    # The running worker (cwd = the checkout) keeps Faust's data directory out of it.
    assert not (ROOT / f"{settings.worker_group}-data").exists()


async def test_same_event_twice_in_a_request_and_in_two_requests(
    pipeline: Pipeline, pool: asyncpg.Pool
) -> None:
    key = await new_site(pool)
    async with aiohttp.ClientSession() as s:
        first = await post(s, pipeline.url, key.api_key, {"events": [event("req-1"), event("req-1")]})
        assert [r["event_id"] for r in first["results"]] == ["req-1", "req-1"]
        await post(s, pipeline.url, key.api_key, event("req-1"))
        await post(s, pipeline.url, key.api_key, event("req-marker"))
    await wait_for(ledgered(pool, key.site_id, 2), what="2 ledger rows")
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM ingest_idempotency WHERE site_id = $1 AND event_id = 'req-1'", key.site_id
        )
        == 1
    )
    inv = await invoice(pool, key.site_id)
    assert inv is not None and inv["events"] == 2


async def test_overlimit_exact_under_concurrent_requests(pipeline: Pipeline, pool: asyncpg.Pool) -> None:
    key = await new_site(pool, quota=100)
    async with aiohttp.ClientSession() as s:
        await asyncio.gather(
            *(
                post(s, pipeline.url, key.api_key, {"events": [event(f"q-{r}-{i}") for i in range(10)]})
                for r in range(15)
            )
        )
    await wait_for(ledgered(pool, key.site_id, 150), what="150 ledger rows")
    # Ledger order: batches in the order they took the invoice row lock (one worker: ledgered_at,
    # the batch transaction's time), then (partition, offset) within a batch. The key spreads a
    # site over partitions, so (partition, offset) alone is not it (docs/scaling.md).
    rows = await pool.fetch(
        "SELECT billing_class FROM ingest_idempotency WHERE site_id = $1 "
        "ORDER BY ledgered_at, kafka_partition, kafka_offset",
        key.site_id,
    )
    classes = [r["billing_class"] for r in rows]
    # Exactly the first 100 in ledger order are included.
    assert classes == ["included"] * 100 + ["overlimit"] * 50
    inv = await invoice(pool, key.site_id)
    assert inv is not None
    assert (inv["events"], inv["overlimit_events"], inv["overlimit_quantity"]) == (150, 50, 50)


async def test_accepted_to_visible_latency(
    pipeline: Pipeline, pool: asyncpg.Pool, record_property: pytest.RecordProperty
) -> None:
    """The figure is recorded, not asserted (speed belongs to benchmarks); the bound is liveness."""
    key = await new_site(pool)
    samples: list[float] = []
    async with aiohttp.ClientSession() as s:
        for i in range(10):
            await post(s, pipeline.url, key.api_key, event(f"fresh-{i}"))
            accepted = time.perf_counter()

            async def visible(n: int = i + 1) -> bool:
                inv = await invoice(pool, key.site_id)
                return inv is not None and inv["events"] >= n

            await wait_for(visible, 10.0, 0.005, f"event {i} in site_usage_monthly")
            samples.append(time.perf_counter() - accepted)
    median_ms, max_ms = statistics.median(samples) * 1000, max(samples) * 1000
    figure = f"accepted→visible over {len(samples)} events: median {median_ms:.0f} ms, max {max_ms:.0f} ms"
    print(figure)
    record_property("accepted_to_visible", figure)
    row = await pool.fetchrow("SELECT sum(events) AS events, sum(within_5s) AS within_5s FROM slo_freshness")
    assert row["events"] >= 10 and row["within_5s"] >= 1


async def test_bad_message_is_dead_lettered_not_blocking(
    pipeline: Pipeline, settings: Settings, pool: asyncpg.Pool
) -> None:
    site = (await new_site(pool)).site_id
    key = str(site).encode()
    produce(
        settings,
        [
            (key, b"not json"),
            (key, message(site, "bad\x00id")),
            (key, message(uuid.uuid4(), "ghost-site")),
            (key, message(site, "after-bad")),
        ],
    )
    await wait_for(ledgered(pool, site, 1), what="the good event after the bad ones")
    reasons = {
        r["reason"]
        for r in await pool.fetch("SELECT reason FROM ingest_dead_letter WHERE topic = $1", settings.topic)
    }
    assert {"not JSON", "unknown site"} <= reasons
    assert any(r.startswith("event_id: must be 1-128 characters") for r in reasons), reasons


async def test_late_event_of_a_closed_month_is_billed_in_the_next_open_month(
    pipeline: Pipeline, settings: Settings, pool: asyncpg.Pool
) -> None:
    site = (await new_site(pool)).site_id
    first = datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    late = first - timedelta(hours=1)  # last hour of the previous month
    await pool.execute(
        "INSERT INTO closed_months (month) VALUES ($1) ON CONFLICT DO NOTHING", late.date().replace(day=1)
    )
    produce(settings, [(str(site).encode(), message(site, "late-1", occurred_at=late))])
    await wait_for(ledgered(pool, site, 1), what="late event ledgered")
    row = await pool.fetchrow(
        "SELECT usage_month, billing_month FROM ingest_idempotency WHERE site_id = $1", site
    )
    assert (row["usage_month"], row["billing_month"]) == (late.date().replace(day=1), first.date())
    inv = await invoice(pool, site)
    assert inv is not None and inv["events"] == 1


async def test_ledgered_events_are_published_to_billable(
    pipeline: Pipeline, settings: Settings, pool: asyncpg.Pool
) -> None:
    site = (await new_site(pool, quota=1)).site_id
    key = str(site).encode()
    produce(settings, [(key, message(site, f"b-{i}", quantity=i + 1)) for i in range(3)])
    await wait_for(ledgered(pool, site, 3), what="3 ledger rows")
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"t-{uuid.uuid4()}",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(settings.billable_topic, p, 0) for p in range(settings.topic_partitions)])
    seen: dict[str, dict] = {}
    deadline = time.monotonic() + 20
    try:
        while len(seen) < 3 and time.monotonic() < deadline:
            msg = await asyncio.to_thread(consumer.poll, 0.5)
            if msg is None or msg.error():
                continue
            doc = orjson.loads(msg.value())
            if doc["site_id"] == str(site):
                assert msg.key() == key
                seen[doc["event_id"]] = doc
    finally:
        consumer.close()
    assert sorted(seen) == ["b-0", "b-1", "b-2"]
    assert [seen[f"b-{i}"]["billing_class"] for i in range(3)] == ["included", "overlimit", "overlimit"]
    assert seen["b-2"]["quantity"] == 3 and seen["b-2"]["billing_month"] == this_month().strftime("%Y-%m-01")


async def scrape(url: str) -> str:
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        return await r.text()


async def test_worker_metrics_are_served(pipeline: Pipeline, settings: Settings, pool: asyncpg.Pool) -> None:
    site = (await new_site(pool)).site_id
    produce(settings, [(str(site).encode(), message(site, "metric-1"))])
    await wait_for(ledgered(pool, site, 1), what="event ledgered")

    async def scraped() -> bool:
        text = await scrape(pipeline.metrics_url("worker"))
        return "opsmantik_billing_drifting_sites{" in text and "opsmantik_worker_consumer_lag " in text

    await wait_for(scraped, 20, 0.5, "drift and lag metrics")
    lines = dict(
        line.rsplit(" ", 1)
        for line in (await scrape(pipeline.metrics_url("worker"))).splitlines()
        if line.startswith("opsmantik_")
    )
    assert float(lines["opsmantik_worker_freshness_seconds_count"]) >= 1


async def test_worker_exports_a_planted_drift(
    pipeline: Pipeline, settings: Settings, pool: asyncpg.Pool
) -> None:
    """The worker's periodic reconcile (every 1 s here) exports the drift it finds: plant an invoice
    row no ledger row backs and the site's gauge shows it; the drifting-sites gauge then equals the
    count `opsmantik reconcile` finds in the same database (other modules plant drift too)."""
    month = f"{this_month():%Y-%m}"
    site = (await new_site(pool)).site_id
    await pool.execute(
        "INSERT INTO site_usage_monthly (site_id, month, events, quantity) VALUES ($1, $2, 7, 7)",
        site,
        this_month().date().replace(day=1),
    )
    gauge = f'opsmantik_billing_drift_events{{month="{month}",site_id="{site}"}}'
    try:

        async def exported() -> bool:
            try:
                return f"{gauge} 7.0" in (await scrape(pipeline.metrics_url("worker"))).splitlines()
            except aiohttp.ClientError:  # the worker is still starting
                return False

        await wait_for(exported, 20, 0.25, "the planted drift of +7 events exported")
        done = subprocess.run(
            [OPSMANTIK, "reconcile", "--month", month, "--json"],
            env=env_for(settings),
            capture_output=True,
            timeout=60,
        )
        drifting = orjson.loads(done.stdout)["drifting_sites"]
        assert done.returncode == 1 and str(site) in drifting

        # The worker's pass compares the sites changed since its last pass and the drifting ones;
        # the command's full comparison also resets the kept figures, so from the worker's next pass
        # on (1 s) its count is the command's, whatever other modules planted.
        async def same_count() -> bool:
            lines = dict(
                line.rsplit(" ", 1)
                for line in (await scrape(pipeline.metrics_url("worker"))).splitlines()
                if line.startswith("opsmantik_billing_drifting_sites{")
            )
            return float(lines[f'opsmantik_billing_drifting_sites{{month="{month}"}}']) == len(drifting)

        await wait_for(same_count, 10, 0.25, "the worker's drifting-sites gauge = the command's count")
    finally:
        await pool.execute("DELETE FROM site_usage_monthly WHERE site_id = $1", site)

    async def series_gone() -> bool:  # a site that no longer drifts has no drift series
        return gauge not in await scrape(pipeline.metrics_url("worker"))

    await wait_for(series_gone, 10, 0.25, "the repaired site's drift series removed")
