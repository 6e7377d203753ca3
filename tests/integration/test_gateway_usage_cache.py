"""The gateway's usage cache follows the active sites, not the number of sites (issue 28): with
10,000 idle sites and their usage rows in the database, a refresh reads the rows of the sites
that sent a request with a limit, and the quota and hard-cap answers stay exact (a site's first
request reads its usage before it is checked)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime

import asyncpg
import pytest
from opsmantik.months import previous_month

from tests.support import gateway as gateway_support
from tests.support.gateway import Gateway, auth, event, new_site

gateway = gateway_support.gateway  # the module-scoped fixture
IDLE_SITES = 10_000
IDLE_PREFIX = "idle-usage-cache-"


@pytest.fixture(scope="module")
async def idle_sites(pool: asyncpg.Pool) -> AsyncIterator[int]:
    """10,000 sites with a hard cap and usage this month and last, none of which sends anything."""
    this = datetime.now(UTC).date().replace(day=1)
    async with pool.acquire() as conn:
        ids = await conn.fetch(
            "INSERT INTO sites (name, hard_cap) SELECT $1 || g, 1000 FROM generate_series(1, $2) g "
            "RETURNING site_id",
            IDLE_PREFIX,
            IDLE_SITES,
        )
        await conn.execute(
            "INSERT INTO site_usage_monthly (site_id, month, events) "
            "SELECT s, m, 7 FROM unnest($1::uuid[]) s, unnest($2::date[]) m",
            [r["site_id"] for r in ids],
            [this, previous_month(this)],
        )
    yield len(ids)
    async with pool.acquire() as conn:
        await conn.execute(
            "DELETE FROM site_usage_monthly WHERE site_id IN (SELECT site_id FROM sites WHERE name LIKE $1)",
            IDLE_PREFIX + "%",
        )
        await conn.execute("DELETE FROM sites WHERE name LIKE $1", IDLE_PREFIX + "%")


async def _set_usage(pool: asyncpg.Pool, site: uuid.UUID, events: int) -> None:
    month = datetime.now(UTC).date().replace(day=1)
    await pool.execute(
        "INSERT INTO site_usage_monthly (site_id, month, events) VALUES ($1, $2, $3) "
        "ON CONFLICT (site_id, month) DO UPDATE SET events = EXCLUDED.events",
        site,
        month,
        events,
    )


async def _post(gw: Gateway, key: str) -> int:
    async with gw.client.post("/api/sync", json=event(), headers=auth(key)) as r:
        return r.status


async def test_refresh_reads_the_active_sites_only(
    gateway: Gateway, pool: asyncpg.Pool, idle_sites: int
) -> None:
    usage = gateway.state.usage
    await usage.refresh(pool, date.today())
    assert usage.rows_read == 0 and not usage.seen  # 10,000 idle sites: nothing read
    active = [await new_site(pool, hard_cap=100) for _ in range(3)]
    for site, key in active:
        await _set_usage(pool, site, 1)
        assert await _post(gateway, key) == 200
    await usage.refresh(pool, date.today())
    assert set(usage.seen) == {site for site, _ in active}
    assert usage.rows_read == 3  # one row each (this month), of 10,000 × 2 + 3 in the table
    assert {s for s, _ in usage.usage} == {site for site, _ in active}


async def test_first_request_reads_its_usage_so_the_hard_cap_is_exact(
    gateway: Gateway, pool: asyncpg.Pool, idle_sites: int
) -> None:
    usage = gateway.state.usage
    await usage.refresh(pool, date.today())
    site, key = await new_site(pool, hard_cap=5)
    await _set_usage(pool, site, 5)  # at the cap before the gateway ever saw the site
    assert await _post(gateway, key) == 429  # no refresh in between: its first request read it
    await _set_usage(pool, site, 4)
    await usage.refresh(pool, date.today())
    assert await _post(gateway, key) == 200


async def test_an_idle_site_leaves_and_is_read_again(
    gateway: Gateway, pool: asyncpg.Pool, idle_sites: int
) -> None:
    usage = gateway.state.usage
    site, key = await new_site(pool, monthly_quota=1)
    assert await _post(gateway, key) == 200
    usage.seen[site] -= usage.active_for_s + 1  # last asked longer ago than the window
    await usage.refresh(pool, date.today())
    assert site not in usage.seen and all(s != site for s, _ in usage.usage)
    await _set_usage(pool, site, 1)  # at the soft quota now: the next event is overlimit
    async with gateway.client.post("/api/sync", json=event(), headers=auth(key)) as r:
        assert (await r.json())["results"][0]["status"] == "overlimit"
    assert site in usage.seen
