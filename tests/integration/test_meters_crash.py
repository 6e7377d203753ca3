"""A worker SIGKILLed mid-batch changes no meter (docs/meters.md "Exact aggregates").

The worker is stopped inside a batch transaction (after its ledger rows and meter increments,
before COMMIT: it waits on a lock this test holds on slo_freshness), SIGKILLed, restarted; the
topic also holds redelivered copies of ledgered events. After the replay every meter's buckets
equal the aggregates computed here in SQL straight from the ledger rows: nothing counted twice,
nothing lost."""

from __future__ import annotations

import random
import uuid
from pathlib import Path

import asyncpg
import pytest
from opsmantik.config import Settings
from opsmantik.meters import definitions

from tests.support.environment import module_environment
from tests.support.pipeline import Pipeline, ledger_count, ledgered, message, new_site_id, produce, wait_for

pytestmark = pytest.mark.integration
settings, pool = module_environment()

# Per minute, from the ledger rows alone: events, quantity, max of $.n, distinct $.user.
FROM_LEDGER = """
SELECT date_trunc('minute', occurred_at) AS m, count(*) AS events, sum(quantity) AS quantity,
       max((properties->>'n')::numeric) AS hi, count(DISTINCT properties->>'user') AS users
FROM ingest_idempotency WHERE site_id = $1 GROUP BY 1 ORDER BY 1
"""
FROM_METERS = """
SELECT b.bucket AS m,
       sum(b.n) FILTER (WHERE b.meter_id = $2) AS events,
       sum(b.total) FILTER (WHERE b.meter_id = $3) AS quantity,
       max(b.hi) FILTER (WHERE b.meter_id = $4) AS hi,
       (SELECT count(DISTINCT u.value) FROM meter_unique_values u
        WHERE u.meter_id = $5 AND u.site_id = $1 AND u.bucket = b.bucket) AS users
FROM meter_buckets b WHERE b.site_id = $1 GROUP BY 1 ORDER BY 1
"""


async def test_a_worker_sigkilled_mid_batch_changes_no_meter(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    rng = random.Random(26_0002)
    tag = uuid.uuid4().hex[:6]
    async with pool.acquire() as conn:
        mx = await definitions.create(conn, f"cmax-{tag}", "*", "MAX", "$.n", {})
        uq = await definitions.create(conn, f"cuq-{tag}", "*", "UNIQUE_COUNT", "$.user", {})
        ids = {m.slug: m.meter_id for m in await definitions.load(conn)}
    site = await new_site_id(pool)
    total, first = 600, 200
    msgs = [
        (
            str(site).encode(),
            message(
                site,
                f"k-{i}",
                quantity=rng.randint(1, 9),
                properties={"n": rng.randint(-(10**6), 10**6), "user": f"u{rng.randint(0, 40)}"},
            ),
        )
        for i in range(total)
    ]
    produce(settings, msgs[:first])
    pipe = Pipeline.start(settings, tmp_path, ("worker", "relay"), worker_batch=50)
    try:
        blocker = await asyncpg.connect(settings.database_url)
        try:
            await wait_for(ledgered(pool, site, first), what="some batches committed")
            tx = blocker.transaction()
            await tx.start()
            # The next batch writes its ledger rows and meter increments, then waits on this lock
            # (record_freshness) before COMMIT. Redelivered copies of ledgered events ride along.
            await blocker.execute("LOCK TABLE slo_freshness IN SHARE MODE")
            produce(settings, msgs[first:] + rng.sample(msgs[:first], 60))

            async def worker_waits_mid_transaction() -> bool:
                n = await pool.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock' AND query LIKE '%slo_freshness%'"
                )
                return bool(n > 0)

            await wait_for(worker_waits_mid_transaction, what="worker blocked inside a batch transaction")
            assert first <= await ledger_count(pool, site) < total
            pipe.kill("worker")
            await tx.rollback()
        finally:
            await blocker.close()
            pipe.kill("worker")
        produce(settings, rng.sample(msgs, 60))  # more copies, for the restarted worker
        pipe.start_one("worker")
        await wait_for(ledgered(pool, site, total), 90, what="restarted worker caught up")
        marker = (str(site).encode(), message(site, "marker", properties={"n": 0, "user": "u0"}))
        produce(settings, [marker])  # behind every copy in the partition: once it is in, all are
        await wait_for(ledgered(pool, site, total + 1), 60, what="the copies consumed")
    except BaseException:
        pipe.stop()  # the failure is the test's, not the exit codes'
        raise
    pipe.stop_cleanly()
    want = [tuple(r) for r in await pool.fetch(FROM_LEDGER, site)]
    got = [
        tuple(r)
        for r in await pool.fetch(FROM_METERS, site, ids["events"], ids["quantity"], mx.meter_id, uq.meter_id)
    ]
    assert sum(r[1] for r in want) == total + 1
    assert got == want
