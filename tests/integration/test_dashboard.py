"""The customer's dashboard and its portal tokens (issue 27), through the deployed pipeline on the
real Kafka and Postgres: 401 for a missing, forged, expired or revoked token on the page and on
every data route; a token reads its own site only; the figures equal the meters' query answers
and the ledger; no token in the gateway's log."""

from __future__ import annotations

import json
import os
import random
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import asyncpg
import pytest
from opsmantik import portal
from opsmantik.config import Settings
from opsmantik.kafka.settings import message_key
from opsmantik.tokens import create_token

from tests.support.billing import cli
from tests.support.gateway import new_site
from tests.support.pipeline import ledgered, message, pipeline_fixture, produce, wait_for

pytestmark = pytest.mark.integration
pipeline = pipeline_fixture()
DATA = ("summary", "meters", "series", "top", "dead-letters")
TOKENS_SEEN: list[str] = []  # every token this module used: none may be in the gateway's log


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


@pytest.fixture(scope="module")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture(scope="module")
async def sites(pool: asyncpg.Pool) -> dict[str, tuple[uuid.UUID, str]]:
    return {
        "a": await new_site(pool, monthly_quota=40, hard_cap=1000),
        "b": await new_site(pool),
    }


@pytest.fixture(scope="module")
async def operator(pool: asyncpg.Pool, settings: Settings) -> str:
    async with pool.acquire() as conn:
        return (await create_token(conn, "dashboard-test", secret=settings.key_secret)).token


def mint_cli(settings: Settings, site: uuid.UUID, *extra: str) -> dict[str, str]:
    r = cli(settings, "portal-token", str(site), "--json", *extra)
    assert r.returncode == 0, r.stderr
    body: dict[str, str] = json.loads(r.stdout)
    TOKENS_SEEN.append(body["token"])
    return body


async def get(
    http: aiohttp.ClientSession, url: str, token: str | None, route: str, **q: str
) -> tuple[int, Any]:
    headers = bearer(token) if token is not None else {}
    async with http.get(f"{url}/dashboard/api/{route}", params=q, headers=headers) as r:
        return r.status, await r.json()


async def page_status(http: aiohttp.ClientSession, url: str, token: str | None) -> tuple[int, str]:
    async with http.get(f"{url}/dashboard", params={} if token is None else {"token": token}) as r:
        return r.status, await r.text()


async def send(http: aiohttp.ClientSession, url: str, key: str, events: list[dict[str, object]]) -> None:
    async with http.post(f"{url}/api/sync", json={"events": events}, headers=bearer(key)) as r:
        assert r.status == 200, await r.text()


def events(n: int, prefix: str, subjects: list[str]) -> list[dict[str, object]]:
    now = datetime.now(UTC).isoformat()
    return [
        {
            "event_id": f"{prefix}-{i}",
            "type": "api_call",
            "occurred_at": now,
            "quantity": 1 + i % 4,
            "subject": subjects[i % len(subjects)],
        }
        for i in range(n)
    ]


async def test_cli_token_opens_page_and_data(pipeline, http, sites, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    site_a, _ = sites["a"]
    body = mint_cli(settings, site_a, "--ttl", "15m")
    assert body["url"].endswith(f"/dashboard?token={body['token']}")
    expires = datetime.fromisoformat(body["expires_at"].replace("Z", "+00:00"))
    assert timedelta(minutes=14) < expires - datetime.now(UTC) <= timedelta(minutes=15)
    status, html = await page_status(http, pipeline.url, body["token"])
    assert status == 200 and "/dashboard/assets/dashboard.js" in html
    for asset in ("dashboard.js", "dashboard.css"):
        async with http.get(f"{pipeline.url}/dashboard/assets/{asset}") as r:
            assert r.status == 200 and len(await r.read()) > 1000
    for route in DATA:
        status, data = await get(http, pipeline.url, body["token"], route)
        assert status == 200, (route, data)
    status, s = await get(http, pipeline.url, body["token"], "summary")
    assert s["site_id"] == str(site_a) and s["monthly_quota"] == 40 and s["hard_cap"] == 1000


async def test_refusals_on_page_and_every_data_route(  # type: ignore[no-untyped-def]
    pipeline, http, sites, settings: Settings, operator: str
) -> None:
    site_a, key_a = sites["a"]
    good = mint_cli(settings, site_a)["token"]
    now = datetime.now(UTC).replace(microsecond=0)
    # Expired: a genuine signature whose expiry passed (its row exists and is not revoked).
    expired_claims = portal.Claims(uuid.uuid4(), site_a, now - timedelta(seconds=1))
    async with pipeline_pool(settings) as conn:
        await conn.execute(
            "INSERT INTO portal_tokens (token_id, site_id, created_at, expires_at, created_by) "
            "VALUES ($1, $2, $3, $4, 'test')",
            expired_claims.token_id,
            site_a,
            now - timedelta(hours=1),
            expired_claims.expires_at,
        )
    expired = portal.sign(expired_claims, settings.key_secret)
    # Forged: the MAC changed; signed under another secret; a valid shape never minted (no row).
    forged_mac = good[:-2] + ("AA" if not good.endswith("AA") else "BB")
    other_secret = portal.sign(portal.Claims(uuid.uuid4(), site_a, now + timedelta(hours=1)), "x" * 40)
    never_minted = portal.sign(
        portal.Claims(uuid.uuid4(), site_a, now + timedelta(hours=1)), settings.key_secret
    )
    # Revoked: minted by the operator API, revoked by it.
    async with http.post(
        f"{pipeline.url}/api/v1/portal/tokens",
        json={"site_id": str(site_a), "ttl": "1h"},
        headers=bearer(operator),
    ) as r:
        assert r.status == 201, await r.text()
        minted = await r.json()
    revoked = minted["token"]
    TOKENS_SEEN.extend([expired, forged_mac, other_secret, never_minted, revoked])
    assert (await get(http, pipeline.url, revoked, "summary"))[0] == 200
    async with http.delete(
        f"{pipeline.url}/api/v1/portal/tokens/{minted['token_id']}", headers=bearer(operator)
    ) as r:
        assert r.status == 204
    # A site key is not a portal token, nor the reverse.
    cases = {
        "missing": None,
        "expired": expired,
        "forged mac": forged_mac,
        "other secret": other_secret,
        "never minted": never_minted,
        "revoked": revoked,
        "site key": key_a,
        "garbage": "omp_" + "x" * 98,
    }
    for name, token in cases.items():
        status, html = await page_status(http, pipeline.url, token)
        assert status == 401 and "events" not in html, (name, status)
        for route in DATA:
            status, body = await get(http, pipeline.url, token, route)
            assert status == 401 and body["error"] == "unauthorized" and "usage" not in body, (
                name,
                route,
                body,
            )
    # The page's ?token= is for the page: a data route wants the header.
    async with http.get(f"{pipeline.url}/dashboard/api/summary", params={"token": good}) as r:
        assert r.status == 401
    # CLI revoke-all ends the good one too.
    r2 = cli(settings, "portal-token", str(site_a), "--revoke-all", "--json")
    assert r2.returncode == 0 and json.loads(r2.stdout)["revoked"] >= 1, r2.stderr
    assert (await get(http, pipeline.url, good, "summary"))[0] == 401


def pipeline_pool(settings: Settings) -> Any:
    class Conn:
        async def __aenter__(self) -> asyncpg.Connection:
            self.conn = await asyncpg.connect(settings.database_url)
            return self.conn

        async def __aexit__(self, *exc: object) -> None:
            await self.conn.close()

    return Conn()


async def test_operator_api_edges(pipeline, http, sites, operator: str) -> None:  # type: ignore[no-untyped-def]
    site_a, key_a = sites["a"]
    url = f"{pipeline.url}/api/v1/portal/tokens"
    cases = [
        (bearer(key_a), {"site_id": str(site_a)}, 403),
        ({}, {"site_id": str(site_a)}, 401),
        (bearer(operator), {"site_id": "nope"}, 400),
        (bearer(operator), {"site_id": str(site_a), "ttl": "59s"}, 400),
        (bearer(operator), {"site_id": str(site_a), "ttl": "31d"}, 400),
        (bearer(operator), {"site_id": str(site_a), "ttl": True}, 400),
        (bearer(operator), {"site_id": str(uuid.uuid4())}, 404),
    ]
    for headers, body, want in cases:
        async with http.post(url, json=body, headers=headers) as r:
            assert r.status == want, (body, await r.text())
    async with http.post(url, json={"site_id": str(site_a), "ttl": 60}, headers=bearer(operator)) as r:
        assert r.status == 201
        minted = await r.json()
        TOKENS_SEEN.append(minted["token"])
    assert set(minted) >= {"token", "url", "expires_at"}
    async with http.delete(f"{url}/{uuid.uuid4()}", headers=bearer(operator)) as r:
        assert r.status == 404


async def test_site_scope_and_figures_equal_meters_and_ledger(  # type: ignore[no-untyped-def]
    pipeline, http, sites, settings: Settings, pool: asyncpg.Pool
) -> None:
    (site_a, key_a), (site_b, key_b) = sites["a"], sites["b"]
    batch_a = events(30, "fig-a", ["alice", "bob", "carol"])
    await send(http, pipeline.url, key_a, batch_a)
    await send(http, pipeline.url, key_b, events(7, "fig-b", ["zed"]))
    await wait_for(ledgered(pool, site_a, 30), timeout_s=30)
    await wait_for(ledgered(pool, site_b, 7), timeout_s=30)
    token_a = mint_cli(settings, site_a)["token"]
    token_b = mint_cli(settings, site_b)["token"]
    ledger_a = await pool.fetch(
        "SELECT subject, quantity FROM ingest_idempotency WHERE site_id = $1 AND billing_month = $2",
        site_a,
        datetime.now(UTC).date().replace(day=1),
    )
    # Summary: the invoice row, equal to the ledger.
    _, s = await get(http, pipeline.url, token_a, "summary")
    assert s["usage"]["events"] == len(ledger_a) and s["usage"]["quantity"] == sum(
        r["quantity"] for r in ledger_a
    )
    assert s["usage"]["overlimit_events"] == max(0, len(ledger_a) - 40)
    _, sb = await get(http, pipeline.url, token_b, "summary")
    assert sb["site_id"] == str(site_b) and sb["usage"]["events"] == 7
    # Series and top: the meters' query answers for the site's own key, and the ledger.
    for meter, ledger_total in (
        ("events", len(ledger_a)),
        ("quantity", sum(r["quantity"] for r in ledger_a)),
    ):
        for tz in ("UTC", "Asia/Kathmandu"):
            _, series = await get(http, pipeline.url, token_a, "series", meter=meter, tz=tz)
            for part, size in (("month", "DAY"), ("today", "HOUR")):
                got = {d["windowStart"]: d["value"] for d in series[part]["data"] if d["value"]}
                q = {
                    "from": series[part]["from"],
                    "to": series[part]["to"],
                    "windowSize": size,
                    "windowTimeZone": tz,
                }
                async with http.get(
                    f"{pipeline.url}/api/v1/meters/{meter}/query", params=q, headers=bearer(key_a)
                ) as r:
                    want = {d["windowStart"]: d["value"] for d in (await r.json())["data"]}
                assert got == want, (meter, tz, part)
            if tz == "UTC":  # every event occurred now: in this UTC month and today
                assert sum(d["value"] for d in series["month"]["data"]) == ledger_total, meter
                assert sum(d["value"] for d in series["today"]["data"]) == ledger_total, meter
        _, top = await get(http, pipeline.url, token_a, "top", meter=meter, group="subject", tz="UTC")
        by_subject: Counter[str] = Counter()
        for r in ledger_a:
            by_subject[r["subject"]] += 1 if meter == "events" else r["quantity"]
        assert {t["group"]: t["value"] for t in top["top"]} == dict(by_subject), meter
        assert [t["value"] for t in top["top"]] == sorted(by_subject.values(), reverse=True)
    # Site B's token sees none of A's subjects.
    _, top_b = await get(http, pipeline.url, token_b, "top", meter="events", group="subject")
    assert [t["group"] for t in top_b["top"]] == ["zed"]
    # Bad parameters: 400 naming them, never a 500.
    for q, field in (({"tz": "Mars/Olympus"}, "tz"), ({"limit": "0"}, "limit"), ({"group": "nope"}, "group")):
        status, body = await get(http, pipeline.url, token_a, "top", **q)
        assert status == 400 and body["details"][0]["field"] == field, body
    assert (await get(http, pipeline.url, token_a, "series", meter="no-such"))[0] == 404


async def test_dead_letters_are_the_sites_own(  # type: ignore[no-untyped-def]
    pipeline, http, sites, settings: Settings, pool: asyncpg.Pool
) -> None:
    (site_a, _), (site_b, _) = sites["a"], sites["b"]
    bad = json.loads(message(site_b, "dl-b-1"))
    bad["quantity"] = 0  # not an event.v1 message: the worker dead-letters it
    produce(settings, [(message_key(settings, site_b, "dl-b-1"), json.dumps(bad).encode())])

    async def dead_lettered() -> bool:
        return bool(await pool.fetchval("SELECT count(*) FROM ingest_dead_letter WHERE event_id = 'dl-b-1'"))

    await wait_for(dead_lettered, timeout_s=30)
    token_a, token_b = mint_cli(settings, site_a)["token"], mint_cli(settings, site_b)["token"]
    _, dl_b = await get(http, pipeline.url, token_b, "dead-letters")
    assert [e["event_id"] for e in dl_b["events"]] == ["dl-b-1"]
    _, dl_a = await get(http, pipeline.url, token_a, "dead-letters")
    assert "dl-b-1" not in [e["event_id"] for e in dl_a["events"]]


async def test_no_token_in_the_gateway_log(pipeline) -> None:  # type: ignore[no-untyped-def]
    """Last in the module: every token used above (in URLs and headers, accepted and refused)."""
    assert TOKENS_SEEN
    log = pipeline.gateway.log.read_text(errors="replace")
    assert "/dashboard" not in log or "token=" not in log
    for token in TOKENS_SEEN:
        for part in (token, token.split(".")[0], token.split(".")[-1]):
            assert part not in log


def local_floor(t: datetime, zone: ZoneInfo, size: str) -> datetime:
    """The start of t's local DAY or HOUR in `zone`, as an instant (independent of meters/windows)."""
    local = t.astimezone(zone)
    if size == "DAY":
        return datetime(local.year, local.month, local.day, tzinfo=zone).astimezone(UTC)
    return local.replace(minute=0, second=0, microsecond=0).astimezone(UTC)


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def test_random_events_series_top_and_summary_equal_the_ledger(  # type: ignore[no-untyped-def]
    pipeline, http, settings: Settings, pool: asyncpg.Pool
) -> None:
    """A property test of every figure the dashboard serves: random events over the last 40 days
    (so some are in the last month, today and the hours of today in every zone), random subjects
    (some none), quantities and redelivered copies; each figure computed here from the ledger rows
    alone: the month's days and today's hours in the zone, the month's top subjects, the invoice."""
    seed = int(os.environ.get("OPSMANTIK_SEED") or random.randrange(1 << 30))
    rng = random.Random(seed)
    site, _ = await new_site(pool, monthly_quota=rng.choice([None, 50, 150]))
    now = datetime.now(UTC)
    msgs = []
    for n in range(rng.randint(150, 250)):
        back = rng.choice([timedelta(hours=rng.uniform(0, 30)), timedelta(days=rng.uniform(0, 40))])
        doc = json.loads(message(site, f"r{n}", quantity=rng.randint(1, 9), occurred_at=now - back))
        if rng.random() < 0.8:
            doc["subject"] = rng.choice(["ann", "bo", "cy", "dee"])
        msgs.append((message_key(settings, site, f"r{n}"), json.dumps(doc).encode()))
        if rng.random() < 0.1:  # redelivered: counted once
            msgs.append(msgs[-1])
    produce(settings, msgs)
    distinct = len({k for k, _ in msgs})
    await wait_for(ledgered(pool, site, distinct), timeout_s=60)
    rows = await pool.fetch(
        "SELECT subject, quantity, occurred_at, billing_month, billing_class FROM ingest_idempotency"
        " WHERE site_id = $1",
        site,
    )
    assert len(rows) == distinct
    token = mint_cli(settings, site)["token"]

    month = now.date().replace(day=1)
    billed = [r for r in rows if r["billing_month"] == month]
    over = [r for r in billed if r["billing_class"] == "overlimit"]
    _, s = await get(http, pipeline.url, token, "summary")
    assert s["usage"] == {
        "events": len(billed),
        "quantity": sum(r["quantity"] for r in billed),
        "overlimit_events": len(over),
        "overlimit_quantity": sum(r["quantity"] for r in over),
    }, seed

    for tz in ("UTC", "Asia/Kathmandu", "America/New_York", "Australia/Lord_Howe"):
        zone = ZoneInfo(tz)
        local_now = now.astimezone(zone)
        month_start = datetime(local_now.year, local_now.month, 1, tzinfo=zone).astimezone(UTC)
        today_start = local_floor(now, zone, "DAY")
        for meter in ("events", "quantity"):
            value = (lambda r: 1) if meter == "events" else (lambda r: r["quantity"])
            days: Counter[datetime] = Counter()
            hours: Counter[datetime] = Counter()
            subjects: Counter[str | None] = Counter()
            for r in rows:
                if r["occurred_at"] >= month_start:  # none is in the future: the month's end holds
                    days[local_floor(r["occurred_at"], zone, "DAY")] += value(r)
                    subjects[r["subject"]] += value(r)
                if r["occurred_at"] >= today_start:
                    hours[local_floor(r["occurred_at"], zone, "HOUR")] += value(r)
            _, series = await get(http, pipeline.url, token, "series", meter=meter, tz=tz)
            for part, want in (("month", days), ("today", hours)):
                got = {instant(d["windowStart"]): d["value"] for d in series[part]["data"] if d["value"]}
                assert got == dict(want), (seed, tz, meter, part)
            _, top = await get(http, pipeline.url, token, "top", meter=meter, group="subject", tz=tz)
            assert {t["group"]: t["value"] for t in top["top"]} == dict(subjects), (seed, tz, meter)
            assert top["groups"] == len(subjects)
