"""The status page on the real stack: the summary JSON and HTML from the background snapshot,
incidents written by `opsmantik incident`, maintenance windows, 90-day rollups, no per-site data,
and the cheapness rules (no database work per request; its own connection, not the outbox's pool)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from opsmantik import schema_files
from opsmantik.config import Settings
from opsmantik.gateway.app import STATE, create_app
from opsmantik.status.components import INDICATOR_WORDS

from tests.support.gateway import Gateway, auth, event, new_site
from tests.support.pipeline import OPSMANTIK, env_for, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def status_gw(settings: Settings) -> AsyncIterator[Gateway]:
    fast = dataclasses.replace(settings, status_refresh_s=0.2, status_slo_refresh_s=0.2)
    app = create_app(fast)
    client = TestClient(TestServer(app))
    await client.start_server()
    yield Gateway(client, app[STATE])
    await client.close()


async def summary(gw: Gateway) -> dict:
    r = await gw.client.get("/status.json")
    assert r.status == 200 and r.content_type == "application/json"
    return await r.json()


async def next_refresh(gw: Gateway, rounds: int = 2) -> None:
    """Wait until the refresher has completed `rounds` more refreshes (the slow part included)."""
    start = gw.state.status.refreshes
    await wait_for(lambda: asyncio.sleep(0, gw.state.status.refreshes >= start + rounds), 10, what="refresh")


async def run_cli(settings: Settings, *argv: str) -> tuple[int, str]:
    """The real `opsmantik` command, as an operator runs it."""
    pipe = asyncio.subprocess.PIPE
    proc = await asyncio.create_subprocess_exec(
        OPSMANTIK, *argv, env=env_for(settings), stdout=pipe, stderr=pipe
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode()


async def test_summary_and_html_name_every_component_and_objective(status_gw: Gateway, pool) -> None:
    site_id, key = await new_site(pool)
    r = await status_gw.client.post("/api/sync", data=orjson.dumps(event()), headers=auth(key))
    assert r.status == 200
    await next_refresh(status_gw)
    body = await summary(status_gw)
    assert [c["name"] for c in body["components"]] == [
        "Ingest API",
        "Event queue",
        "Fallback buffer",
        "Billing ledger freshness",
        "Dashboard/usage API",
    ]
    # (no worker here, and a fresh producer may miss its first deadline: any state may show)
    assert body["status"]["description"] == INDICATOR_WORDS[body["status"]["indicator"]]
    assert len(body["slo"]["objectives"]) == 5
    html = await (await status_gw.client.get("/status")).text()
    for o in body["slo"]["objectives"]:
        assert o["name"] in html
    # public page: nothing per site, no keys
    for text in (orjson.dumps(body).decode(), html):
        assert str(site_id) not in text and key not in text and "omk_" not in text


def openapi_validator(name: str):  # type: ignore[no-untyped-def]
    """A validator for one of schemas/openapi.yaml's component schemas (its $refs
    resolved there)."""
    import jsonschema
    import yaml

    doc = yaml.safe_load(schema_files.read_text("openapi.yaml"))
    schema = {**doc["components"]["schemas"][name], "components": doc["components"]}
    return jsonschema.Draft202012Validator(schema)


async def test_status_json_matches_its_openapi_schema(status_gw: Gateway, settings: Settings) -> None:
    rc, _ = await run_cli(
        settings,
        "incident",
        "open",
        "Schema check",
        "--impact",
        "minor",
        "--component",
        "usage_api",
        "--message",
        "checking the shape",
    )
    assert rc == 0
    await next_refresh(status_gw)
    body = await summary(status_gw)
    assert body["incidents"] and body["slo"]["objectives"]
    errors = [e.message for e in openapi_validator("StatusSummary").iter_errors(body)]
    assert errors == []
    body["status"]["indicator"] = "unknown"  # the validator does reject a wrong enum
    assert list(openapi_validator("StatusSummary").iter_errors(body))
    rc, _ = await run_cli(settings, "incident", "resolve", body["incidents"][0]["id"], "--message", "done")
    assert rc == 0


async def test_format_negotiation(status_gw: Gateway) -> None:
    c = status_gw.client
    assert (await c.get("/status")).content_type == "text/html"
    assert (await c.get("/status?format=html")).content_type == "text/html"
    assert (await c.get("/status?format=json")).content_type == "application/json"
    assert (await c.get("/status", headers={"Accept": "application/json"})).content_type == "application/json"
    both = {"Accept": "text/html,application/json"}
    assert (await c.get("/status", headers=both)).content_type == "text/html"
    bad = await c.get("/status?format=xml")
    assert bad.status == 400 and (await bad.json())["details"][0]["field"] == "format"
    r = await c.get("/status.json")
    assert r.headers["Access-Control-Allow-Origin"] == "*" and "max-age" in r.headers["Cache-Control"]


async def test_gzip_and_etag_revalidation(status_gw: Gateway) -> None:
    import gzip

    c = status_gw.client
    for path in ("/status", "/status.json"):
        raw = await c.get(path, headers={"Accept-Encoding": "identity"}, auto_decompress=False)
        zipped = await c.get(path, headers={"Accept-Encoding": "gzip, deflate"}, auto_decompress=False)
        assert "Content-Encoding" not in raw.headers and zipped.headers["Content-Encoding"] == "gzip"
        raw_body, zipped_body = await raw.read(), await zipped.read()
        if raw.headers["ETag"] == zipped.headers["ETag"]:  # the same snapshot (not refreshed between)
            assert gzip.decompress(zipped_body) == raw_body and len(zipped_body) < len(raw_body) / 3
        etag = zipped.headers["ETag"]
        again = await c.get(path, headers={"If-None-Match": etag})
        assert again.status in (200, 304)  # 200 only if a refresh changed the page meanwhile
        if again.status == 304:
            assert await again.read() == b"" and again.headers["ETag"] == etag
        assert (await c.get(path, headers={"If-None-Match": '"stale"'})).status == 200


async def test_incident_cli_open_update_resolve(status_gw: Gateway, settings: Settings) -> None:
    rc, out = await run_cli(
        settings,
        "incident",
        "open",
        "Delayed usage counts",
        "--impact",
        "major",
        "--component",
        "ledger_freshness",
        "--message",
        "Usage counts are behind.",
        "--json",
    )
    assert rc == 0
    incident_id = orjson.loads(out)["id"]
    await next_refresh(status_gw)
    body = await summary(status_gw)
    assert [i["name"] for i in body["incidents"]] == ["Delayed usage counts"]
    assert body["status"]["indicator"] == "major" and body["status"]["description"] == "Partial outage"
    assert body["incidents"][0]["components"][0]["id"] == "ledger_freshness"

    rc, _ = await run_cli(
        settings,
        "incident",
        "update",
        str(incident_id),
        "--status",
        "monitoring",
        "--message",
        "A fix is in place.",
    )
    assert rc == 0
    rc, _ = await run_cli(settings, "incident", "resolve", str(incident_id), "--message", "All caught up.")
    assert rc == 0
    await next_refresh(status_gw)
    body = await summary(status_gw)
    assert body["incidents"] == []
    html = await (await status_gw.client.get("/status")).text()
    assert "Delayed usage counts" in html and "All caught up." in html  # under past incidents
    # resolved is final; bad input is a usage error
    assert (await run_cli(settings, "incident", "resolve", str(incident_id), "--message", "again"))[0] == 1
    assert (await run_cli(settings, "incident", "open", "x" * 201, "--message", "m"))[0] == 2
    assert (await run_cli(settings, "incident", "open", "x" * 200, "--message", "m"))[0] == 0
    rc, out = await run_cli(settings, "incident", "list", "--json")
    assert rc == 0 and [i["name"] for i in orjson.loads(out)] == ["x" * 200]
    bad = dataclasses.replace(settings, database_url="postgresql://nobody@127.0.0.1:1/none")
    assert (await run_cli(bad, "incident", "list"))[0] == 3


async def test_maintenance_window_shows_as_scheduled_then_in_progress(
    status_gw: Gateway, pool, settings: Settings
) -> None:
    now = datetime.now(UTC)
    # announced the way operators do (the CLI refuses less than 48 h ahead) ...
    start, end = now + timedelta(days=3), now + timedelta(days=3, hours=2)
    rc, _ = await run_cli(
        settings,
        "maintenance",
        "add",
        start.isoformat(),
        end.isoformat(),
        "--reason",
        "Postgres minor upgrade",
    )
    assert rc == 0
    # ... and one already under way (announced earlier: written directly, as time would have it)
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO maintenance_windows (starts_at, ends_at, reason) VALUES ($1, $2, $3)",
            now - timedelta(minutes=5),
            now + timedelta(hours=1),
            "Kafka rolling restart",
        )
    try:
        await next_refresh(status_gw)
        body = await summary(status_gw)
        got = {m["name"]: m["status"] for m in body["scheduled_maintenances"]}
        assert got == {"Postgres minor upgrade": "scheduled", "Kafka rolling restart": "in_progress"}
        html = await (await status_gw.client.get("/status")).text()
        assert "Scheduled maintenance" in html and "Kafka rolling restart" in html
    finally:
        async with pool.acquire() as conn:
            await conn.execute("DELETE FROM maintenance_windows")


async def test_uptime_bars_come_from_the_daily_rollups(status_gw: Gateway, pool) -> None:
    today = datetime.now(UTC).date()
    async with pool.acquire() as conn:
        await conn.execute(
            """INSERT INTO status_component_daily (day, component, instance, checks, partial,
                              major) VALUES ($1, 'event_queue', 'other-gateway', 1000, 20, 5)""",
            today - timedelta(days=3),
        )
        await conn.execute(
            """INSERT INTO status_component_daily (day, component, instance, checks)
                              VALUES ($1, 'event_queue', 'old', 1)""",
            today - timedelta(days=101),
        )
    await next_refresh(status_gw)
    html = await (await status_gw.client.get("/status")).text()
    day = today - timedelta(days=3)
    assert f'title="{day:%d %b %Y}: 97.50 % uptime (1,000 checks)"' in html
    # today's row is the refresher's own checks, added every refresh
    async with pool.acquire() as conn:
        checks = await conn.fetchval(
            "SELECT sum(checks) FROM status_component_daily WHERE day = $1 AND component = 'ingest_api'",
            today,
        )
        old = await conn.fetchval("SELECT count(*) FROM status_component_daily WHERE instance = 'old'")
    assert checks >= 2
    assert old == 0  # pruned past 100 days


async def test_requests_never_touch_the_database(status_gw: Gateway) -> None:
    """Both pools made unusable: /status and /status.json still answer, from the snapshot."""
    state = status_gw.state

    class Refuse:
        def acquire(self, *a, **k):  # noqa: ANN001, ANN002, ANN003
            raise AssertionError("a status request used the database")

    pool, state.pool = state.pool, Refuse()  # type: ignore[assignment]
    try:
        for _ in range(50):
            for path in ("/status", "/status.json"):
                r = await status_gw.client.get(path)
                assert r.status == 200
    finally:
        state.pool = pool


async def test_refresher_has_its_own_connection_and_refreshes_with_the_gateway_pool_exhausted(
    status_gw: Gateway,
) -> None:
    state = status_gw.state
    assert state.status._pool is not state.pool
    held: list[asyncpg.Connection] = []
    try:
        for _ in range(state.settings.db_pool_max):
            held.append(await state.pool.acquire(timeout=5))
        await next_refresh(status_gw, rounds=3)
        assert state.status.snapshot is not None and state.status.snapshot.db_reachable
    finally:
        for conn in held:
            await state.pool.release(conn)
