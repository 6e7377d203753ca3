"""Meter compaction (docs/meters.md "Storage bound"): every answer of a window of 15 minutes or
more is the same before and after `opsmantik meters compact`, and equals the aggregate computed
from the rows alone; MINUTE windows over the compacted range are a 400 naming windowSize; a second
run changes nothing.

The buckets are written by the worker's own code (meters/aggregate.py) from generated ledger
facts in 2019, far before any other test's data, so the watermark this test raises (2020-01-01)
refuses no other test's MINUTE window. Dense events (several per quarter hour) make every merge
combine minutes: a LATEST that kept the greatest value, or a MIN that summed, would be caught.
"""

from __future__ import annotations

import random
import subprocess
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from opsmantik import sites
from opsmantik.config import Settings
from opsmantik.gateway.app import create_app
from opsmantik.meters import aggregate, compact, definitions, query

from tests.integration.test_meters import METERS, auth, day_start, expected, iso, random_props, window_start
from tests.support.pipeline import OPSMANTIK, env_for

pytestmark = pytest.mark.integration
SEED = 2026_2615
CHANGES = [  # (zone, an instant near its daylight-saving change), all before WATERMARK
    ("America/New_York", datetime(2019, 11, 3, 6, 0, tzinfo=UTC)),  # 25-hour day
    ("America/New_York", datetime(2019, 3, 10, 7, 0, tzinfo=UTC)),  # 23-hour day
    ("Australia/Lord_Howe", datetime(2019, 4, 6, 15, 0, tzinfo=UTC)),  # +11 -> +10:30
]
ZONES = ["UTC", "Asia/Kathmandu", "Australia/Lord_Howe", "America/New_York"]  # +05:45, +10:30
WATERMARK = "2020-01-01T00:00:00Z"
EVENTS = 1500


@pytest.fixture(scope="module")
async def client(settings: Settings) -> AsyncIterator[TestClient]:
    c = TestClient(TestServer(create_app(settings, publisher=None)))
    await c.start_server()
    yield c
    await c.close()


def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([OPSMANTIK, *args], env=env_for(settings), capture_output=True, timeout=60)


def facts(site: uuid.UUID, rng: random.Random) -> list[aggregate.Fact]:
    out = []
    for n in range(EVENTS):
        _, center = rng.choice(CHANGES)
        at = center + timedelta(seconds=rng.randint(-5 * 3600, 5 * 3600), microseconds=rng.randint(0, 999999))
        props = random_props(rng)
        out.append(
            aggregate.Fact(
                site,
                f"c{n:05d}",
                rng.choice(["a", "b", "c"]),
                at,
                date(at.year, at.month, 1),
                rng.randint(1, 5),
                orjson.dumps(props).decode() if props is not None else None,
                rng.choice(["s1", "s2", "s3"]) if rng.random() < 0.8 else None,
            )
        )
    return out


def random_query(rng: random.Random, meter: dict[str, Any]) -> tuple[list[tuple[str, str]], dict[str, Any]]:
    zone = rng.choice(ZONES)
    _, center = rng.choice(CHANGES)
    size = rng.choice(["HOUR", "HOUR", "DAY", "DAY", "MONTH", None])
    reach = [30, 6, 2] if size in ("HOUR", None) else [30]  # a DAY window needs more than 24 hours
    start = window_start(center - timedelta(hours=rng.choice(reach)), size or "HOUR", zone)
    end = window_start(center + timedelta(hours=rng.choice(reach)), size or "HOUR", zone)
    if size == "MONTH":
        d = start.astimezone(ZoneInfo(zone)).date()
        end = day_start(zone, date(d.year + d.month // 12, d.month % 12 + 1, 1))
    if size is None:  # one window: any quarter-hour bounds
        start -= timedelta(minutes=15 * rng.randint(0, 3))
        end += timedelta(minutes=15 * rng.randint(0, 3))
    params: list[tuple[str, str]] = [("from", iso(start)), ("to", iso(end))]
    if size:
        params += [("windowSize", size), ("windowTimeZone", zone)]
    subjects = rng.choice([None, ["s1"], ["s2", "s3"]])
    params += [("subject", s) for s in subjects or []]
    group_by = [g for g in [*meter["groupBy"], "subject"] if rng.random() < 0.5]
    params += [("groupBy", g) for g in group_by]
    filters = {}
    if meter["groupBy"] and rng.random() < 0.3:
        filters["region"] = rng.choice(["eu", "us"])
        params.append(("filterGroupBy[region]", filters["region"]))
    q = {
        "from": start,
        "to": end,
        "windowSize": size,
        "zone": zone,
        "subject": subjects,
        "groupBy": group_by,
        "filters": filters,
    }
    return params, q


async def answer(client: TestClient, key: str, slug: str, params: list[tuple[str, str]]) -> dict[Any, Any]:
    resp = await client.get(f"/api/v1/meters/{slug}/query", params=params, headers=auth(key))
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    return {
        (r["windowStart"], r["subject"], orjson.dumps(r["groupBy"], option=orjson.OPT_SORT_KEYS).decode()): r[
            "value"
        ]
        for r in body["data"]
    }


async def sizes(pool: asyncpg.Pool, meter_ids: list[uuid.UUID], site: uuid.UUID) -> tuple[int, int]:
    b = await pool.fetchval(
        "SELECT count(*) FROM meter_buckets WHERE meter_id = ANY($1) AND site_id = $2", meter_ids, site
    )
    u = await pool.fetchval(
        "SELECT count(*) FROM meter_unique_values WHERE meter_id = ANY($1) AND site_id = $2", meter_ids, site
    )
    return int(b), int(u)


async def test_minute_query_racing_a_compaction_reads_one_snapshot(
    settings: Settings, pool: asyncpg.Pool, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A compaction that raises the watermark and merges between the query's read of the watermark
    and its read of the buckets: the MINUTE answer is still every minute, exactly (one snapshot),
    and the next MINUTE query there is refused. Data in 2018, below both tests' watermarks."""
    tag = uuid.uuid4().hex[:6]
    async with pool.acquire() as conn:
        meters = [m for m in await definitions.load(conn) if m.slug == "events"]
        key = await sites.create_site_with_key(conn, f"race-{tag}")
        t0 = datetime(2018, 6, 1, 10, 0, tzinfo=UTC)
        rows = [
            aggregate.Fact(
                key.site_id, f"r{n:04d}", "a", t0 + timedelta(seconds=7 * n), date(2018, 6, 1), 1, None, None
            )
            for n in range(600)  # 70 minutes, 8-9 events a minute
        ]
        async with conn.transaction():
            await aggregate.write(conn, aggregate.accumulate(meters, rows))
    want = {}
    for r in rows:
        minute = iso(r.occurred_at.replace(second=0, microsecond=0))
        want[(minute, None, "{}")] = want.get((minute, None, "{}"), 0) + 1
    read_mark = compact.watermark

    async def compaction_in_between(conn: asyncpg.Connection) -> datetime | None:
        mark = await read_mark(conn)
        async with pool.acquire() as other:
            done = await compact.compact(other, datetime(2019, 1, 1, tzinfo=UTC))
        assert done.quarter_buckets_written > 0
        return mark

    monkeypatch.setattr(query.compact, "watermark", compaction_in_between)
    minute = [("from", iso(t0)), ("to", iso(t0 + timedelta(minutes=75))), ("windowSize", "MINUTE")]
    assert await answer(client, key.api_key, "events", minute) == want
    monkeypatch.setattr(query.compact, "watermark", read_mark)
    resp = await client.get("/api/v1/meters/events/query", params=minute, headers=auth(key.api_key))
    assert resp.status == 400 and (await resp.json())["details"][0]["field"] == "windowSize"


async def test_compaction_skips_the_days_without_buckets(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Buckets 18 years apart: one merge per day that has buckets, not one per day between (a
    bucket in year 1 made that 737,000 transactions, and the run looked hung)."""
    tag = uuid.uuid4().hex[:6]
    days = [datetime(2000, 1, 1, 23, 50, tzinfo=UTC), datetime(2018, 3, 1, 0, 5, tzinfo=UTC)]
    async with pool.acquire() as conn:
        meters = [m for m in await definitions.load(conn) if m.slug == "events"]
        key = await sites.create_site_with_key(conn, f"sparse-{tag}")
        rows = [
            aggregate.Fact(
                key.site_id,
                f"s{n}",
                "a",
                day + timedelta(minutes=n),
                date(day.year, day.month, 1),
                1,
                None,
                None,
            )
            for day in days
            for n in range(3)
        ]
        async with conn.transaction():
            await aggregate.write(conn, aggregate.accumulate(meters, rows))
    merged: list[tuple[datetime, datetime]] = []
    merge = compact.merge

    async def counted(
        conn: asyncpg.Connection, meter_id: uuid.UUID, site_id: uuid.UUID, lo: datetime, hi: datetime
    ) -> tuple[int, int]:
        if site_id == key.site_id:
            merged.append((lo, hi))
        return await merge(conn, meter_id, site_id, lo, hi)

    monkeypatch.setattr(compact, "merge", counted)
    async with pool.acquire() as conn:
        await compact.compact(conn, datetime(2019, 1, 1, tzinfo=UTC))
    # 2000-01-01 23:45 + a day, then 2018-03-01 00:00 + a day: the minutes of each day in one merge
    assert merged == [
        (datetime(2000, 1, 1, 23, 45, tzinfo=UTC), datetime(2000, 1, 2, 23, 45, tzinfo=UTC)),
        (datetime(2018, 3, 1, 0, 0, tzinfo=UTC), datetime(2018, 3, 2, 0, 0, tzinfo=UTC)),
    ]
    left = await pool.fetchval(
        "SELECT count(*) FROM meter_buckets WHERE site_id = $1 AND extract(minute FROM bucket)::int % 15 > 0",
        key.site_id,
    )
    assert left == 0


async def test_compaction_keeps_every_answer_and_the_ledger_value(
    settings: Settings, pool: asyncpg.Pool, client: TestClient
) -> None:
    rng = random.Random(SEED)
    tag = uuid.uuid4().hex[:6]
    async with pool.acquire() as conn:
        created = [
            await definitions.create(conn, f"k{tag}-{i}", et, agg, vp, gb)
            for i, (agg, et, vp, gb) in enumerate(METERS)
        ]
        meters = created + [m for m in await definitions.load(conn) if m.slug in ("events", "quantity")]
        key = await sites.create_site_with_key(conn, f"compact-{tag}")
        rows = facts(key.site_id, rng)
        async with conn.transaction():
            await aggregate.write(conn, aggregate.accumulate(meters, rows))
    ledger = [r._asdict() for r in rows]
    listed = await (await client.get("/api/v1/meters", headers=auth(key.api_key))).json()
    defs = {m["slug"]: m for m in listed}
    asked = []
    for _ in range(60):
        slug = rng.choice([m.slug for m in meters])
        params, q = random_query(rng, defs[slug])
        asked.append((slug, params, q, await answer(client, key.api_key, slug, params)))
    minute = [("from", "2019-11-03T05:00:00Z"), ("to", "2019-11-03T07:00:00Z"), ("windowSize", "MINUTE")]
    assert len(await answer(client, key.api_key, "events", minute)) > 60  # minutes before compaction

    ids = [m.meter_id for m in meters]
    before = await sizes(pool, ids, key.site_id)
    refused = cli(settings, "meters", "compact", "--before", iso(datetime.now(UTC) - timedelta(days=2)))
    assert refused.returncode == 2 and b"acceptance window" in refused.stderr, refused.stderr
    done = cli(settings, "meters", "compact", "--before", WATERMARK, "--json")
    assert done.returncode == 0, done.stderr
    after = await sizes(pool, ids, key.site_id)
    assert after[0] < before[0] and after[1] < before[1], (before, after)  # merged, not copied
    off_quarter = await pool.fetchval(
        "SELECT count(*) FROM meter_buckets"
        " WHERE site_id = $1 AND extract(minute FROM bucket)::int % 15 <> 0",
        key.site_id,
    )
    assert off_quarter == 0
    again = cli(settings, "meters", "compact", "--before", WATERMARK, "--json")
    assert again.returncode == 0, again.stderr
    assert orjson.loads(again.stdout)["quarter_buckets_written"] == 0  # idempotent
    assert await sizes(pool, ids, key.site_id) == after

    for slug, params, q, was in asked:
        now = await answer(client, key.api_key, slug, params)
        assert now == was, (slug, params)
        want = expected(defs[slug], ledger, q)
        want = {(iso(datetime.fromisoformat(k[0])), k[1], k[2]): v for k, v in want.items()}
        assert now == want, (slug, params)

    resp = await client.get("/api/v1/meters/events/query", params=minute, headers=auth(key.api_key))
    assert resp.status == 400
    assert (await resp.json())["details"][0]["field"] == "windowSize"
    off = [("from", "2019-11-03T05:07:00Z"), ("to", "2019-11-03T07:00:00Z")]
    resp = await client.get("/api/v1/meters/events/query", params=off, headers=auth(key.api_key))
    assert resp.status == 400 and (await resp.json())["details"][0]["field"] == "from"
