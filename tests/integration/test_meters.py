"""Meters through the real worker and the real query API (docs/meters.md).

The property test sends random events (types, properties, subjects, times across the
daylight-saving changes of America/New_York and Australia/Lord_Howe) straight to the ingest topic,
lets the worker ledger them, then asks random queries of random meters over HTTP and compares
every answer with the aggregate computed here, independently, from the ledger rows. The queries'
windows (UTC, America/New_York, Australia/Lord_Howe) read every tier: minute buckets, hour and day
rollups (meters/rollup.py pieces); the test checks that each zone used all three."""

from __future__ import annotations

import random
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from opsmantik import sites
from opsmantik.config import Settings
from opsmantik.gateway.app import create_app
from opsmantik.meters import definitions, rollup, windows

from tests.support.pipeline import message, pipeline_fixture, produce, wait_for

pytestmark = pytest.mark.integration
pipeline = pipeline_fixture("worker", "relay")
SEED = 2026_26
CHANGES = [  # (zone, an instant near its daylight-saving change)
    ("America/New_York", datetime(2024, 11, 3, 6, 0, tzinfo=UTC)),  # 25-hour day
    ("America/New_York", datetime(2024, 3, 10, 7, 0, tzinfo=UTC)),  # 23-hour day
    ("Australia/Lord_Howe", datetime(2024, 4, 6, 15, 0, tzinfo=UTC)),  # +11 -> +10:30
]


@pytest.fixture(scope="module")
async def client(settings: Settings) -> AsyncIterator[TestClient]:
    c = TestClient(TestServer(create_app(settings, publisher=None)))
    await c.start_server()
    yield c
    await c.close()


# ------------------------------------------------------------------ the independent model


def read(props: Any, key: str) -> Any:
    return props.get(key, "MISSING") if isinstance(props, dict) else "MISSING"


def numeric(raw: Any) -> Decimal | None:
    """docs/meters.md "Values", written again from the doc."""
    if raw == "MISSING" or raw is None or isinstance(raw, bool | dict | list):
        return None
    try:
        v = Decimal(repr(raw)) if isinstance(raw, float) else Decimal(raw)
    except Exception:
        return None
    if not v.is_finite() or abs(v) > Decimal(10) ** 15:
        return None
    return v


def unique_text(raw: Any) -> str | None:
    if raw == "MISSING" or raw is None or isinstance(raw, dict | list):
        return None
    if isinstance(raw, str):
        return raw if len(raw) <= 256 else None
    return orjson.dumps(raw).decode()


def group_text(raw: Any) -> tuple[bool, str | None]:
    if raw == "MISSING" or raw is None:
        return True, None
    if isinstance(raw, dict | list) or (isinstance(raw, str) and len(raw) > 256):
        return False, None
    return True, raw if isinstance(raw, str) else orjson.dumps(raw).decode()


@cache
def day_start(zone: str, local_day: date) -> datetime:
    """The first instant whose local date is local_day: scanned minute by minute."""
    z = ZoneInfo(zone)
    t = datetime(local_day.year, local_day.month, local_day.day, tzinfo=UTC) - timedelta(hours=15)
    while t.astimezone(z).date() < local_day:
        t += timedelta(minutes=1)
    return t


def window_start(t: datetime, size: str, zone: str) -> datetime:
    z = ZoneInfo(zone)
    m = t.replace(second=0, microsecond=0)
    if size == "MINUTE":
        return m
    if size == "HOUR":
        while m.astimezone(z).minute != 0:
            m -= timedelta(minutes=1)
        return m
    d = t.astimezone(z).date()
    return day_start(zone, d if size == "DAY" else d.replace(day=1))


def expected(
    meter: dict[str, Any], rows: list[asyncpg.Record], q: dict[str, Any]
) -> dict[tuple[str, str | None, str], Any]:
    """(windowStart, subject, groupBy json) -> value, from the ledger rows alone."""
    acc: dict[tuple[str, str | None, str], list[Any]] = defaultdict(list)
    for r in rows:
        if meter["eventType"] not in ("*", r["event_type"]):
            continue
        if not (q["from"] <= r["occurred_at"] < q["to"]):
            continue
        if q["subject"] is not None and (r["subject"] or "") not in q["subject"]:
            continue
        props = orjson.loads(r["properties"]) if r["properties"] else {}
        groups: dict[str, str | None] = {}
        ok = True
        for name, path in meter["groupBy"].items():
            good, g = group_text(read(props, path[2:]))
            ok = ok and good
            groups[name] = g
        if not ok:
            continue
        if any(groups.get(k) != v for k, v in q["filters"].items()):
            continue
        agg = meter["aggregation"]
        if agg == "COUNT":
            v: Any = 1
        elif meter["valueProperty"] == "$quantity":
            v = Decimal(r["quantity"])
        elif agg == "UNIQUE_COUNT":
            v = unique_text(read(props, meter["valueProperty"][2:]))
        else:
            v = numeric(read(props, meter["valueProperty"][2:]))
        if v is None:
            continue
        ws = window_start(r["occurred_at"], q["windowSize"], q["zone"]) if q["windowSize"] else q["from"]
        subject = (r["subject"] or None) if (q["subject"] is not None or "subject" in q["groupBy"]) else None
        gb = {k: groups.get(k) for k in q["groupBy"] if k in meter["groupBy"]}
        key = (ws.isoformat(), subject, orjson.dumps(gb, option=orjson.OPT_SORT_KEYS).decode())
        acc[key].append((r["occurred_at"], r["event_id"], v))
    out: dict[tuple[str, str | None, str], Any] = {}
    for key, vals in acc.items():
        nums = [v for _, _, v in vals]
        agg = meter["aggregation"]
        if agg == "COUNT":
            res: Any = len(vals)
        elif agg == "UNIQUE_COUNT":
            res = len(set(nums))
        elif agg == "SUM":
            res = sum(nums, Decimal(0))
        elif agg == "AVG":
            res = sum(nums, Decimal(0)) / Decimal(len(nums))
        elif agg == "MIN":
            res = min(nums)
        elif agg == "MAX":
            res = max(nums)
        else:
            res = max(vals, key=lambda x: (x[0], x[1]))[2]
        if isinstance(res, Decimal):
            res = int(res) if res == res.to_integral_value() else float(res)
        out[key] = res
    return out


# ------------------------------------------------------------------ the events and meters


def random_props(rng: random.Random) -> dict[str, Any] | None:
    if rng.random() < 0.1:
        return None
    p: dict[str, Any] = {}
    kind = rng.random()
    if kind < 0.45:
        p["n"] = rng.randint(-1000, 10**6)
    elif kind < 0.6:
        p["n"] = rng.randint(-400, 400) / 8
    elif kind < 0.68:
        p["n"] = str(rng.randint(0, 99)) + ".25"
    elif kind < 0.74:
        p["n"] = rng.choice([{"x": 1}, [1], True, "abc", None, 10**18, 1e300])
    # else: missing
    if rng.random() < 0.85:
        p["region"] = rng.choice(["eu", "us", "ap", 7, "x" * 300, {"nested": 1}])
    if rng.random() < 0.9:
        p["user"] = rng.choice(["u1", "u2", "u3", "u4", 5, "y" * 300])
    return p


METERS = [
    ("COUNT", "a", None, {}),
    ("COUNT", "*", None, {"region": "$.region"}),
    ("SUM", "*", "$.n", {"region": "$.region"}),
    ("AVG", "b", "$.n", {}),
    ("MIN", "*", "$.n", {"region": "$.region"}),
    ("MAX", "a", "$.n", {}),
    ("LATEST", "*", "$.n", {}),
    ("UNIQUE_COUNT", "*", "$.user", {"region": "$.region"}),
]


async def test_every_answer_equals_the_ledger(
    settings: Settings, pool: asyncpg.Pool, pipeline: Any, client: TestClient
) -> None:
    rng = random.Random(SEED)
    tag = uuid.uuid4().hex[:6]
    async with pool.acquire() as conn:
        slugs = []
        for i, (agg, et, vp, gb) in enumerate(METERS):
            m = await definitions.create(conn, f"p{tag}-{i}", et, agg, vp, gb)
            slugs.append(m.slug)
        slugs += ["events", "quantity"]
        keys = [await sites.create_site_with_key(conn, f"m-{tag}-{s}") for s in range(2)]
    msgs = []
    last: dict[uuid.UUID, datetime] = {}
    for n in range(360):
        site = keys[n % 2].site_id
        _, center = rng.choice(CHANGES)
        if site in last and rng.random() < 0.5:  # several events of a site in one minute: merged rollups
            occurred = last[site].replace(second=rng.randint(0, 59), microsecond=rng.randint(0, 999999))
        else:
            occurred = center + timedelta(
                seconds=rng.randint(-30 * 3600, 30 * 3600), microseconds=rng.randint(0, 999999)
            )
        doc = orjson.loads(
            message(
                site,
                f"m{n}",
                quantity=rng.randint(1, 5),
                occurred_at=occurred,
                received_at=occurred,
                properties=random_props(rng),
            )
        )
        last[site] = occurred
        doc["type"] = rng.choice(["a", "b", "c"])
        if rng.random() < 0.8:
            doc["subject"] = rng.choice(["s1", "s2", "s3"])
        msgs.append((f"{site}/m{n}".encode(), orjson.dumps(doc)))
        if rng.random() < 0.1:  # a redelivered copy: never counted twice
            msgs.append(msgs[-1])
    produce(settings, msgs)

    async def ledgered() -> bool:
        n = await pool.fetchval(
            "SELECT count(*) FROM ingest_idempotency WHERE site_id = ANY($1)", [k.site_id for k in keys]
        )
        return n == 360

    await wait_for(ledgered, timeout_s=60)
    key = keys[0]
    rows = await pool.fetch(
        "SELECT event_id, event_type, occurred_at, quantity, properties::text AS properties, subject "
        "FROM ingest_idempotency WHERE site_id = $1",
        key.site_id,
    )
    meters = {
        m["slug"]: m for m in await (await client.get("/api/v1/meters", headers=auth(key.api_key))).json()
    }
    asked = 0
    used: set[tuple[str, int]] = set()  # (zone, tier) of the pieces the queries read (meters/rollup.py)
    for _ in range(80):
        slug = rng.choice(slugs)
        meter = meters[slug]
        zone, center = rng.choice(CHANGES)
        if rng.random() < 0.25:  # UTC windows: days whole in the day tier
            zone = "UTC"
        size = rng.choice(["MINUTE", "HOUR", "HOUR", "DAY", "DAY", "MONTH", None])
        lo = center - timedelta(hours=rng.choice([36, 30, 12]))
        hi = center + timedelta(hours=rng.choice([36, 30, 12]))
        if size == "MINUTE":  # a short span: at most a few hundred windows
            lo, hi = center - timedelta(minutes=90), center + timedelta(minutes=90)
        start = window_start(lo, size or "MINUTE", zone)
        end = window_start(hi, size or "MINUTE", zone)
        if size == "MONTH":  # the next month's first instant
            d = start.astimezone(ZoneInfo(zone)).date()
            end = day_start(zone, date(d.year + d.month // 12, d.month % 12 + 1, 1))
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
        # A minute piece of a query without subjects or groups reads the minute rollups (width 1).
        whole = (
            meter["aggregation"] != "UNIQUE_COUNT"
            and subjects is None
            and not any(g in meter["groupBy"] or g == "subject" for g in group_by)
            and not filters
        )
        for ws, we in windows.windows(start, end, size, ZoneInfo(zone), 10_000) if size else [(start, end)]:
            used |= {(zone, 1 if whole and width == 0 else width) for width, _, _ in rollup.pieces(ws, we)}
        resp = await client.get(f"/api/v1/meters/{slug}/query", params=params, headers=auth(key.api_key))
        assert resp.status == 200, await resp.text()
        body = await resp.json()
        got = {
            (
                row["windowStart"],
                row["subject"],
                orjson.dumps(row["groupBy"], option=orjson.OPT_SORT_KEYS).decode(),
            ): row["value"]
            for row in body["data"]
        }
        want = expected(
            meter,
            rows,
            {
                "from": start,
                "to": end,
                "windowSize": size,
                "zone": zone,
                "subject": subjects,
                "groupBy": group_by,
                "filters": filters,
            },
        )
        want = {(iso(datetime.fromisoformat(k[0])), k[1], k[2]): v for k, v in want.items()}
        assert got == want, (slug, params)
        asked += 1
    assert asked == 80
    # Every tier was read in each zone: minutes (buckets or the minute rollups), hour rollups, day
    # rollups; and both kinds of minutes were read.
    zones = ("UTC", "America/New_York", "Australia/Lord_Howe")
    assert {(z, 0 if w == 1 else w) for z, w in used} == {(z, w) for z in zones for w in (0, 60, 1440)}
    assert {w for _, w in used} == {0, 1, 60, 1440}


def iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def cli(settings: Settings, *args: str) -> Any:
    import subprocess

    from tests.support.pipeline import OPSMANTIK, env_for

    done = subprocess.run(
        [OPSMANTIK, *args, "--json"], env=env_for(settings), capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return orjson.loads(done.stdout)


async def test_backfill_is_exact_and_idempotent_and_a_key_sees_its_site_only(
    settings: Settings, pool: asyncpg.Pool, pipeline: Any, client: TestClient
) -> None:
    tag = uuid.uuid4().hex[:6]
    async with pool.acquire() as conn:
        keys = [await sites.create_site_with_key(conn, f"b-{tag}-{s}") for s in range(2)]
    now = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=5)
    msgs = [
        (
            f"{k.site_id}/b{i}".encode(),
            message(k.site_id, f"b{i}", occurred_at=now, received_at=now, properties={"n": i + 100 * s}),
        )
        for s, k in enumerate(keys)
        for i in range(20)
    ]
    produce(settings, msgs)

    async def ledgered() -> bool:
        n = await pool.fetchval(
            "SELECT count(*) FROM ingest_idempotency WHERE site_id = ANY($1)", [k.site_id for k in keys]
        )
        return bool(n == 40)

    await wait_for(ledgered, timeout_s=60)
    slug = f"bf-{tag}"
    cli(
        settings,
        "meters",
        "create",
        slug,
        "--event-type",
        "*",
        "--aggregation",
        "SUM",
        "--value-property",
        "$.n",
    )
    params = {"from": iso(now), "to": iso(now + timedelta(minutes=1))}

    async def total(key: str, **extra: str) -> Any:
        resp = await client.get(f"/api/v1/meters/{slug}/query", params={**params, **extra}, headers=auth(key))
        return resp.status, await resp.json()

    assert (await total(keys[0].api_key))[1]["data"] == []  # created after the events: not counted
    for _ in range(2):  # idempotent
        done = cli(settings, "meters", "backfill", slug)
        assert done["events_read"] >= 40
        for s, k in enumerate(keys):
            status, body = await total(k.api_key)
            assert status == 200
            assert [r["value"] for r in body["data"]] == [sum(i + 100 * s for i in range(20))]
    status, body = await total(keys[0].api_key, filterCustomerId=str(keys[1].site_id))
    assert status == 400 and body["details"][0]["field"] == "filterCustomerId"
    status, body = await total(keys[0].api_key, windowTimeZone="Mars/Olympus")
    assert status == 400 and body["details"][0]["field"] == "windowTimeZone"
    status, body = await total(keys[0].api_key, to=iso(now - timedelta(minutes=1)))
    assert status == 400 and body["details"][0]["field"] == "from"
    resp = await client.get("/api/v1/meters/no-such-meter/query", headers=auth(keys[0].api_key))
    assert resp.status == 404
    resp = await client.get(
        "/api/v1/meters/events/query", params=params, headers={**auth(keys[1].api_key), "Accept": "text/csv"}
    )
    assert resp.status == 200 and (await resp.text()).splitlines()[1].endswith(",20")


async def test_expensive_queries_are_400s_naming_the_parameter(
    settings: Settings, pool: asyncpg.Pool, pipeline: Any, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/meters.md "Query API" caps: more stored rows to read than MAX_READ is a 400 naming
    windowSize (from without one), decided before the query runs; an answer of more rows than
    MAX_ROWS a 400 naming windowSize. Caps lowered here so 24 events reach them."""
    from opsmantik.meters import query

    tag = uuid.uuid4().hex[:6]
    async with pool.acquire() as conn:
        key = await sites.create_site_with_key(conn, f"cap-{tag}")
    t0 = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
    msgs = [
        (
            f"{key.site_id}/c{i}".encode(),
            message(
                key.site_id,
                f"c{i}",
                occurred_at=t0 + timedelta(minutes=i),
                received_at=t0 + timedelta(hours=1),
                properties={},
            ),
        )
        for i in range(24)
    ]
    produce(settings, msgs)

    async def ledgered() -> bool:
        return bool(
            await pool.fetchval("SELECT count(*) FROM ingest_idempotency WHERE site_id = $1", key.site_id)
            == 24
        )

    await wait_for(ledgered, timeout_s=60)

    async def ask(**params: str) -> tuple[int, Any]:
        resp = await client.get(
            "/api/v1/meters/events/query",
            params={"from": iso(t0), "to": iso(t0 + timedelta(minutes=30)), **params},
            headers=auth(key.api_key),
        )
        return resp.status, await resp.json()

    # 24 rows to read either way: the minute buckets (grouped by subject) or the minute rollups.
    for params in ({"windowSize": "MINUTE", "groupBy": "subject"}, {"windowSize": "MINUTE"}, {}):
        status, body = await ask(**params)
        assert status == 200 and sum(r["value"] for r in body["data"]) == 24, body
    monkeypatch.setattr(query, "MAX_READ", 23)
    for params, field in (
        ({"windowSize": "MINUTE", "groupBy": "subject"}, "windowSize"),
        ({"windowSize": "MINUTE"}, "windowSize"),
        ({}, "from"),
    ):
        status, body = await ask(**params)
        assert status == 400 and body["details"][0]["field"] == field, (params, body)
        assert "more than 23 stored rows" in body["message"]
    monkeypatch.setattr(query, "MAX_READ", 24)
    assert (await ask(windowSize="MINUTE"))[0] == 200
    monkeypatch.setattr(query, "MAX_ROWS", 23)
    status, body = await ask(windowSize="MINUTE")
    assert status == 400 and body["details"][0]["field"] == "windowSize", body
    monkeypatch.setattr(query, "MAX_ROWS", 24)
    status, body = await ask(windowSize="MINUTE")
    assert status == 200 and [r["value"] for r in body["data"]] == [1] * 24
