"""Voids and late events in the meters (docs/meters.md "Voids and late events").

Two old months M and N (nobody else's) are billed through the real worker and closed with
`opsmantik billing close`: events in M, voids while M is open, M closed, late events of M (billed
in N), a void of a row of the closed month M (an adjustment booked in N), voids in N, N closed.
Then the `events` and `quantity` meters filtered to each billing month equal its statement, and
every meter's answer per minute and billing month equals the rule computed here from the ledger
rows and the voids; a backfill (recomputed from the ledger) gives the same answers."""

from __future__ import annotations

import random
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from opsmantik import sites
from opsmantik.billing.voids import void_events
from opsmantik.config import Settings
from opsmantik.gateway.app import create_app
from opsmantik.meters import backfill, definitions

from tests.support.pipeline import OPSMANTIK, env_for, message, pipeline_fixture, produce, wait_for

pytestmark = pytest.mark.integration
pipeline = pipeline_fixture("worker", "relay")
M, N = date(2021, 6, 1), date(2021, 7, 1)
FROM, TO = datetime(2021, 6, 30, 23, 0, tzinfo=UTC), datetime(2021, 7, 1, 1, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
async def client(settings: Settings) -> AsyncIterator[TestClient]:
    c = TestClient(TestServer(create_app(settings, publisher=None)))
    await c.start_server()
    yield c
    await c.close()


def iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def close(settings: Settings, month: date) -> None:
    import subprocess

    done = subprocess.run(
        [OPSMANTIK, "billing", "close", "--month", f"{month:%Y-%m}", "--json"],
        env=env_for(settings),
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr + done.stdout


def events(
    rng: random.Random, site: uuid.UUID, prefix: str, start: datetime, n: int
) -> list[tuple[bytes, bytes]]:
    out = []
    for i in range(n):
        at = start + timedelta(minutes=rng.randint(0, 4), seconds=rng.randint(0, 59))
        doc = orjson.loads(
            message(
                site,
                f"{prefix}{i}",
                quantity=rng.randint(1, 9),
                occurred_at=at,
                received_at=at,  # the gateway's window: occurred_at at most 5 minutes after it
                properties={"n": rng.randint(-50, 50), "user": rng.choice(["u1", "u2", "u3"])},
            )
        )
        doc["subject"] = rng.choice(["s1", "s2"])
        out.append((f"{site}/{prefix}{i}".encode(), orjson.dumps(doc)))
    return out


async def ledger_of(pool: asyncpg.Pool, site: uuid.UUID) -> tuple[list[asyncpg.Record], dict[str, date]]:
    rows = await pool.fetch(
        "SELECT event_id, occurred_at, billing_month, quantity, properties::text AS properties "
        "FROM ingest_idempotency WHERE site_id = $1",
        site,
    )
    voids = await pool.fetch("SELECT event_id, booked_month FROM billing_voids WHERE site_id = $1", site)
    return list(rows), {v["event_id"]: v["booked_month"] for v in voids}


def expected(rows: list[asyncpg.Record], voided: dict[str, date], agg: str) -> dict[tuple[str, str], Any]:
    """The rule, from the ledger rows and the voids: n and total of a (minute, billing month) are
    the rows billed in it minus the voids booked in it; max and the distinct users are over the
    rows not voided; a bucket that cancels out with nothing left is no data."""
    n: dict[tuple[str, str], int] = defaultdict(int)
    total: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    live: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for r in rows:
        props = orjson.loads(r["properties"])
        v = Decimal(r["quantity"]) if agg == "SUM" else Decimal(props["n"]) if agg == "MAX" else Decimal(1)
        at = iso(r["occurred_at"].replace(second=0, microsecond=0))
        billed = (at, f"{r['billing_month']:%Y-%m}")
        n[billed] += 1
        total[billed] += v
        if r["event_id"] in voided:
            booked = (at, f"{voided[r['event_id']]:%Y-%m}")
            n[booked] -= 1
            total[booked] -= v
        else:
            live[billed].append(props["user"] if agg == "UNIQUE_COUNT" else v)
    out: dict[tuple[str, str], Any] = {}
    for k in set(n) | set(live):
        if agg == "UNIQUE_COUNT":
            if live[k]:
                out[k] = len(set(live[k]))
        elif n[k] or total[k] or live[k]:
            value = {"COUNT": n[k], "SUM": total[k], "MAX": max(live[k], default=None)}[agg]
            out[k] = None if value is None else int(value)
    return out


def expected_windows(
    rows: list[asyncpg.Record], voided: dict[str, date], agg: str, start_of: Any
) -> dict[tuple[str, str], Any]:
    """The same rule over windows (`start_of`: a minute -> its window's start): a window of a billing
    month holds the minute buckets of that month in it that are data (expected() above): n and total
    add, the max and the distinct users are over their rows not voided."""
    n: dict[tuple[str, str], int] = defaultdict(int)
    total: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    live: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for r in rows:
        props = orjson.loads(r["properties"])
        v = Decimal(r["quantity"]) if agg == "SUM" else Decimal(props["n"]) if agg == "MAX" else Decimal(1)
        at = r["occurred_at"].replace(second=0, microsecond=0)
        billed = (at, f"{r['billing_month']:%Y-%m}")
        n[billed] += 1
        total[billed] += v
        if r["event_id"] in voided:
            booked = (at, f"{voided[r['event_id']]:%Y-%m}")
            n[booked] -= 1
            total[booked] -= v
        else:
            live[billed].append(props["user"] if agg == "UNIQUE_COUNT" else v)
    wn: dict[tuple[str, str], int] = defaultdict(int)
    wtotal: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    wlive: dict[tuple[str, str], list[Any]] = defaultdict(list)
    present: set[tuple[str, str]] = set()
    for k in set(n) | set(live):
        if not (n[k] or total[k] or live[k]):
            continue  # a minute bucket that cancels out with nothing left: no data
        w = (iso(start_of(k[0])), k[1])
        present.add(w)
        wn[w] += n[k]
        wtotal[w] += total[k]
        wlive[w] += live[k]
    out: dict[tuple[str, str], Any] = {}
    for w in present:
        if agg == "UNIQUE_COUNT":
            if wlive[w]:
                out[w] = len(set(wlive[w]))
            continue
        value = {"COUNT": wn[w], "SUM": wtotal[w], "MAX": max(wlive[w], default=None)}[agg]
        out[w] = None if value is None else int(value)
    return out


async def per_window(
    client: TestClient, key: str, slug: str, start: datetime, end: datetime, size: str | None
) -> dict[tuple[str, str], Any]:
    """The answer by window and billing month: HOUR and DAY windows and the whole range, read from
    the hour and day rollups (meters/rollup.py pieces), not the minutes."""
    params = {"from": iso(start), "to": iso(end), **({"windowSize": size} if size else {})}
    rows = await answer(client, key, slug, groupBy="billing_month", **params)
    return {(r["windowStart"], r["groupBy"]["billing_month"]): r["value"] for r in rows}


WINDOWS = [  # (from, to, windowSize, a minute -> its window's start): hour pieces, day pieces, both
    (FROM, TO, "HOUR", lambda t: t.replace(minute=0)),
    (
        FROM - timedelta(days=1, hours=23),
        TO + timedelta(hours=23),
        "DAY",
        lambda t: t.replace(hour=0, minute=0),
    ),
    (
        FROM - timedelta(days=1, minutes=5),
        TO + timedelta(days=1, minutes=7),
        None,
        lambda t: FROM - timedelta(days=1, minutes=5),
    ),
]


async def answer(client: TestClient, key: str, slug: str, **params: str) -> list[dict[str, Any]]:
    resp = await client.get(
        f"/api/v1/meters/{slug}/query",
        params={"from": iso(FROM), "to": iso(TO), **params},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert resp.status == 200, await resp.text()
    data: list[dict[str, Any]] = (await resp.json())["data"]
    return data


async def per_minute(client: TestClient, key: str, slug: str) -> dict[tuple[str, str], Any]:
    rows = await answer(client, key, slug, windowSize="MINUTE", groupBy="billing_month")
    return {(r["windowStart"], r["groupBy"]["billing_month"]): r["value"] for r in rows}


async def test_closed_months_meters_equal_their_statements(
    settings: Settings, pool: asyncpg.Pool, pipeline: Any, client: TestClient
) -> None:
    rng = random.Random(2026_2601)
    tag = uuid.uuid4().hex[:6]
    async with pool.acquire() as conn:
        key = await sites.create_site_with_key(conn, f"mv-{tag}")
        mx = await definitions.create(conn, f"vmax-{tag}", "*", "MAX", "$.n", {})
        uq = await definitions.create(conn, f"vuq-{tag}", "*", "UNIQUE_COUNT", "$.user", {})
    site = key.site_id
    in_m = datetime(2021, 6, 30, 23, 55, tzinfo=UTC)

    async def ledgered(n: int) -> None:
        async def check() -> bool:
            return bool(
                await pool.fetchval("SELECT count(*) FROM ingest_idempotency WHERE site_id = $1", site) == n
            )

        await wait_for(check, timeout_s=60)

    # "top": the hour's greatest value and its only "u-top" user, voided: every tier must lose both.
    top = orjson.loads(
        message(
            site,
            "top",
            occurred_at=in_m,
            received_at=in_m,
            properties={"n": 999, "user": "u-top"},
        )
    )
    top["subject"] = "s1"
    produce(settings, [*events(rng, site, "m", in_m, 16), (f"{site}/top".encode(), orjson.dumps(top))])
    await ledgered(17)
    async with pool.acquire() as conn:
        await void_events(conn, site, ["m1", "m2", "top"], "test: void in the open month", "test")
    close(settings, M)
    produce(
        settings,
        events(rng, site, "late", in_m, 8) + events(rng, site, "n", datetime(2021, 7, 1, tzinfo=UTC), 8),
    )
    await ledgered(33)
    async with pool.acquire() as conn:
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM ingest_idempotency WHERE site_id = $1 AND event_id LIKE 'late%' "
                "AND usage_month = $2 AND billing_month = $3",
                site,
                M,
                N,
            )
            == 8
        )
        done = await void_events(conn, site, ["m3", "m4", "late1", "late2", "n0"], "test: voids in N", "test")
        assert sum(v.adjustment for v in done) == 2  # m3, m4: billed in the closed month M, booked in N
    close(settings, N)

    statements = {
        r["month"]: r
        for r in await pool.fetch(
            "SELECT month, events, quantity, voids FROM billing_statements WHERE site_id = $1", site
        )
    }
    assert statements[M]["voids"] == 3 and statements[N]["voids"] == 5
    for month in (M, N):
        for slug, col in (("events", "events"), ("quantity", "quantity")):
            got = await answer(
                client, key.api_key, slug, **{"filterGroupBy[billing_month]": f"{month:%Y-%m}"}
            )
            assert [r["value"] for r in got] == [int(statements[month][col])], (slug, month)

    rows, voided = await ledger_of(pool, site)
    for slug, agg in (("events", "COUNT"), ("quantity", "SUM"), (mx.slug, "MAX"), (uq.slug, "UNIQUE_COUNT")):
        want = {(iso(datetime.fromisoformat(k[0])), k[1]): v for k, v in expected(rows, voided, agg).items()}
        assert await per_minute(client, key.api_key, slug) == want, slug
        for start, end, size, start_of in WINDOWS:  # the hour and day tiers hold the voids too
            want = expected_windows(rows, voided, agg, start_of)
            assert await per_window(client, key.api_key, slug, start, end, size) == want, (slug, size)
    # Recomputed from the ledger (meters backfill), the answers are the same.
    before = {s: await per_minute(client, key.api_key, s) for s in (mx.slug, uq.slug)}
    coarse = {(s, w[2]): await per_window(client, key.api_key, s, *w[:3]) for s in before for w in WINDOWS}
    async with pool.acquire() as conn:
        for s in before:
            await backfill.backfill(conn, s)
    assert {s: await per_minute(client, key.api_key, s) for s in before} == before
    again = {(s, w[2]): await per_window(client, key.api_key, s, *w[:3]) for s in before for w in WINDOWS}
    assert again == coarse
