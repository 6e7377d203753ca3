"""Migration 0017 on a database with data: the rollups it computes from the buckets that exist
(schemas/postgres/0017_meter_rollups.sql, after its CREATE TABLEs) equal the rollups the worker's
statement writes beside the buckets (meters/aggregate.sql), row for row (docs/meters.md "Tiers")."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, date, datetime, timedelta
from importlib import resources

import asyncpg
import orjson
import pytest
from opsmantik.meters import aggregate, definitions

from tests.integration.test_meters import METERS, random_props
from tests.support.environment import module_environment

pytestmark = pytest.mark.integration
settings, pool = module_environment()  # a database of its own: the migration's SQL reads every meter
ROLLUPS = (
    "SELECT meter_id, site_id, width, bucket, billing_month, subject, groups::text, n, total, lo, hi, "
    "latest_value, latest_at, latest_event_id FROM meter_rollups WHERE meter_id = ANY($1) "
    "ORDER BY 1, 2, 3, 4, 5, 6, 7"
)
VALUES = (
    "SELECT meter_id, site_id, width, bucket, billing_month, subject, groups::text, value "
    "FROM meter_rollup_values WHERE meter_id = ANY($1) ORDER BY 1, 2, 3, 4, 5, 6, 7, 8"
)


def backfill_sql() -> str:
    text = resources.files("opsmantik.schemas.postgres").joinpath("0017_meter_rollups.sql").read_text()
    marker = "-- The existing buckets' rollups"
    assert marker in text
    return text[text.index(marker) :]


async def test_the_migration_computes_the_rollups_the_worker_writes(pool: asyncpg.Pool) -> None:
    rng = random.Random(2026_2617)
    tag = uuid.uuid4().hex[:6]
    async with pool.acquire() as conn:
        meters = [
            await definitions.create(conn, f"mig{tag}-{i}", "*", agg, vp, gb)
            for i, (agg, _, vp, gb) in enumerate(METERS)
        ]
        ids = [m.meter_id for m in meters]
        site = uuid.uuid4()
        t0 = datetime(2023, 3, 31, 20, 0, tzinfo=UTC)
        facts = [
            aggregate.Fact(
                site,
                f"e{i}",
                rng.choice(["a", "b"]),
                t0 + timedelta(seconds=rng.randint(0, 3 * 86400)),
                date(2023, 3 + rng.randint(0, 1), 1),
                rng.randint(1, 5),
                orjson.dumps(random_props(rng)).decode(),
                rng.choice([None, "s1", "s2"]),
            )
            for i in range(600)
        ]
        async with conn.transaction():  # as the worker: several batches, buckets and rollups together
            for k in range(0, len(facts), 50):
                await aggregate.write(conn, aggregate.accumulate(meters, facts[k : k + 50]))
        written = (await conn.fetch(ROLLUPS, ids), await conn.fetch(VALUES, ids))
        assert {r["width"] for r in written[0]} == {1, 60, 1440} and written[1]
        async with conn.transaction():
            await conn.execute("DELETE FROM meter_rollups")  # as before the migration: buckets only
            await conn.execute("DELETE FROM meter_rollup_values")
            await conn.execute(backfill_sql())
        migrated = (await conn.fetch(ROLLUPS, ids), await conn.fetch(VALUES, ids))
        assert [tuple(r) for r in migrated[0]] == [tuple(r) for r in written[0]]
        assert [tuple(r) for r in migrated[1]] == [tuple(r) for r in written[1]]
