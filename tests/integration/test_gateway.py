"""Every code of DESIGN.md's HTTP table (503 is in test_gateway_faults.py, which stops engines),
against the real Kafka and Postgres."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, date, datetime

import asyncpg
import orjson
from opsmantik.config import Settings
from opsmantik.kafka.settings import message_key
from opsmantik.sites import revoke_key

from tests.support import gateway as gateway_support
from tests.support.gateway import Gateway, auth, event, new_site, read_at

gateway = gateway_support.gateway  # the module-scoped fixture


async def post(gw: Gateway, key: str, doc: object, **headers: str):
    body = doc if isinstance(doc, bytes) else orjson.dumps(doc)
    return await gw.client.post("/api/sync", data=body, headers={**auth(key), **headers})


async def test_200_single_and_batch_with_receipts_on_the_topic(
    gateway: Gateway, pool: asyncpg.Pool, settings: Settings
) -> None:
    site, key = await new_site(pool)
    r = await post(gateway, key, event("one", quantity=3, properties={"plan": "pro"}))
    assert r.status == 200, await r.text()
    [res] = (await r.json())["results"]
    assert res["event_id"] == "one" and res["status"] == "accepted"
    msg_key, msg = await asyncio.to_thread(
        read_at, settings, res["receipt"]["partition"], res["receipt"]["offset"]
    )
    assert msg_key == message_key(settings, site, "one") == f"{site}/one".encode()
    assert msg["site_id"] == str(site) and msg["event_id"] == "one" and msg["quantity"] == 3
    assert msg["path"] == "kafka" and msg["gateway_status"] == "accepted" and msg["v"] == 1

    batch = [event(f"b{i}") for i in range(5)] + [event("b0")]  # the same id twice: produced once
    r = await post(gateway, key, {"events": batch})
    assert r.status == 200
    results = (await r.json())["results"]
    assert [x["event_id"] for x in results] == ["b0", "b1", "b2", "b3", "b4", "b0"]
    assert results[0]["receipt"] == results[5]["receipt"]
    assert len({(x["receipt"]["partition"], x["receipt"]["offset"]) for x in results}) == 5
    assert r.headers["RateLimit-Limit"] == "2000"


async def test_400_names_index_and_field_and_captures_nothing(gateway: Gateway, pool: asyncpg.Pool) -> None:
    _, key = await new_site(pool)
    r = await post(gateway, key, {"events": [event(), event(quantity=0), event(event_id="bad id")]})
    assert r.status == 400
    body = await r.json()
    assert body["error"] == "invalid_request"
    assert [(d["index"], d["field"]) for d in body["details"]] == [(1, "quantity"), (2, "event_id")]
    for bad in (b"{", b"[]", b"\xff", orjson.dumps({"events": []})):
        r = await post(gateway, key, bad)
        assert r.status == 400 and (await r.json())["details"][0]["index"] is None


async def test_401_missing_unknown_malformed_and_revoked(gateway: Gateway, pool: asyncpg.Pool) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer omk_" + "x" * 43},
        {"Authorization": "Basic abc"},
        {"Authorization": "Bearer "},
        {"Authorization": "Bearer omk_'; DROP TABLE sites;--xxxxxxxxxxxx"},
    ):
        r = await gateway.client.post(
            "/api/sync", data=orjson.dumps(event()), headers={"Content-Type": "application/json", **headers}
        )
        assert r.status == 401
        assert (await r.json())["error"] == "unauthorized"
    site, key = await new_site(pool)
    assert (await post(gateway, key, event())).status == 200
    async with pool.acquire() as conn:
        key_id = await conn.fetchval("SELECT key_id FROM api_keys WHERE site_id = $1", site)
        assert await revoke_key(conn, key_id)
    await gateway.state.keys.refresh()  # what the background refresher does every TTL
    assert (await post(gateway, key, event())).status == 401


async def test_413_body_and_batch_limits_at_their_edges(
    gateway: Gateway, pool: asyncpg.Pool, settings: Settings
) -> None:
    _, key = await new_site(pool)
    one = orjson.dumps({"events": [event()]})
    limit = settings.max_body_bytes
    exact = one[:-1] + b" " * (limit - len(one)) + b"}"
    assert len(exact) == limit
    assert (await post(gateway, key, exact)).status == 200
    over = one[:-1] + b" " * (limit - len(one) + 1) + b"}"
    r = await post(gateway, key, over)
    assert r.status == 413 and (await r.json())["error"] == "payload_too_large"
    n = settings.max_batch_events
    assert (await post(gateway, key, {"events": [event() for _ in range(n)]})).status == 200
    r = await post(gateway, key, {"events": [event() for _ in range(n + 1)]})
    assert r.status == 413 and (await r.json())["error"] == "payload_too_large"


async def test_415_wrong_content_type(gateway: Gateway, pool: asyncpg.Pool) -> None:
    _, key = await new_site(pool)
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "application/jsonx", ""):
        r = await gateway.client.post(
            "/api/sync",
            data=orjson.dumps(event()),
            headers={"Authorization": f"Bearer {key}", "Content-Type": ctype},
        )
        assert r.status == 415, ctype
        assert (await r.json())["error"] == "unsupported_media_type"
    r = await post(gateway, key, event(), **{"Content-Type": "application/json; charset=utf-8"})
    assert r.status == 200


async def test_429_rate_limited_with_headers(gateway: Gateway, pool: asyncpg.Pool) -> None:
    _, key = await new_site(pool, rate=0.01, burst=2)
    codes = [(await post(gateway, key, event())).status for _ in range(2)]
    assert codes == [200, 200]
    r = await post(gateway, key, event())
    assert r.status == 429
    assert (await r.json())["error"] == "rate_limited"
    assert int(r.headers["Retry-After"]) >= 1
    assert r.headers["RateLimit-Limit"] == "2" and r.headers["RateLimit-Remaining"] == "0"


async def _set_usage(pool: asyncpg.Pool, site: uuid.UUID, events: int) -> None:
    month = datetime.now(UTC).date().replace(day=1)
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO site_usage_monthly (site_id, month, events, quantity) "
            "VALUES ($1, $2, $3, $3::bigint)",
            site,
            month,
            events,
        )


async def test_429_quota_exceeded_at_the_hard_cap(gateway: Gateway, pool: asyncpg.Pool) -> None:
    site, key = await new_site(pool, hard_cap=5)
    await _set_usage(pool, site, 4)
    await gateway.state.usage.refresh(pool, date.today())
    assert (await post(gateway, key, event())).status == 200  # 4 < 5: still under the cap
    async with pool.acquire() as conn:
        await conn.execute("UPDATE site_usage_monthly SET events = 5 WHERE site_id = $1", site)
    await gateway.state.usage.refresh(pool, date.today())
    r = await post(gateway, key, event())
    assert r.status == 429
    assert (await r.json())["error"] == "quota_exceeded"
    assert int(r.headers["Retry-After"]) >= 1 and "RateLimit-Limit" in r.headers


async def test_overlimit_and_degraded(gateway: Gateway, pool: asyncpg.Pool) -> None:
    site, key = await new_site(pool, monthly_quota=3)
    await _set_usage(pool, site, 2)
    await gateway.state.usage.refresh(pool, date.today())
    r = await post(gateway, key, {"events": [event(), event()]})
    assert [x["status"] for x in (await r.json())["results"]] == ["accepted", "overlimit"]
    gateway.state.usage.loaded_at = None  # never loaded / stale: fail open
    r = await post(gateway, key, event())
    assert (await r.json())["results"][0]["status"] == "degraded"
    await gateway.state.usage.refresh(pool, date.today())


async def test_fallback_to_the_outbox_when_the_breaker_is_open(gateway: Gateway, pool: asyncpg.Pool) -> None:
    site, key = await new_site(pool)
    gateway.state.breaker.failure("test: broker declared unavailable")
    try:
        r = await post(gateway, key, {"events": [event("f1"), event("f2"), event("f1")]})
    finally:
        gateway.state.breaker.success()
    assert r.status == 200
    results = (await r.json())["results"]
    assert [x["status"] for x in results] == ["fallback"] * 3
    ids = [x["receipt"]["outbox_id"] for x in results]
    assert ids[0] == ids[2] != ids[1]
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT id, site_id, event_id, payload FROM ingest_fallback_buffer "
            "WHERE id = ANY($1::bigint[]) ORDER BY id",
            ids,
        )
    assert [r["event_id"] for r in rows] == ["f1", "f2"] and {r["site_id"] for r in rows} == {site}
    payload = orjson.loads(rows[0]["payload"])
    assert payload["path"] == "fallback" and payload["gateway_status"] == "fallback"


async def test_a_key_writes_and_reads_only_its_own_site(
    gateway: Gateway, pool: asyncpg.Pool, settings: Settings
) -> None:
    site_a, key_a = await new_site(pool)
    site_b, key_b = await new_site(pool)
    r = await post(gateway, key_a, event(site_id=str(site_b)))
    assert r.status == 400 and (await r.json())["details"][0]["field"] == "site_id"
    r = await post(gateway, key_a, {"events": [event("shared-id")], "site_id": str(site_b)})
    assert r.status == 400
    r = await post(gateway, key_a, event("shared-id"))
    receipt = (await r.json())["results"][0]["receipt"]
    msg_key, msg = await asyncio.to_thread(read_at, settings, receipt["partition"], receipt["offset"])
    assert msg_key == message_key(settings, site_a, "shared-id") and msg["site_id"] == str(site_a)
    # Export: ledger rows of both sites exist; each key sees only its own.
    month = datetime.now(UTC).date().replace(day=1)
    async with pool.acquire() as conn:
        for site, n in ((site_a, 3), (site_b, 2)):
            for i in range(n):
                await conn.execute(
                    "INSERT INTO ingest_idempotency (site_id, event_id, event_type, occurred_at, usage_month,"
                    " billing_month, quantity, billing_class, path, received_at) VALUES"
                    " ($1, $2, 't', now(), $3, $3, 2, 'included', 'kafka', now())",
                    site,
                    f"x{i}",
                    month,
                )
            await conn.execute(
                "INSERT INTO site_usage_monthly (site_id, month, events, quantity) VALUES ($1, $2, $3, $4)",
                site,
                month,
                n,
                2 * n,
            )
    for key, site, n in ((key_a, site_a, 3), (key_b, site_b, 2)):
        r = await gateway.client.get(
            f"/api/billing/dispute-export?month={month:%Y-%m}&format=ndjson", headers=auth(key)
        )
        assert r.status == 200
        lines = [orjson.loads(line) for line in (await r.read()).splitlines()]
        rows = [x for x in lines if x["kind"] == "row"]  # then the summary line (docs/billing.md)
        assert len(rows) == n == int(r.headers["X-Invoice-Events"]) == lines[-1]["totals"]["events"]
        assert {x["site_id"] for x in rows} == {str(site)}
        assert sum(x["quantity"] for x in rows) == int(r.headers["X-Invoice-Quantity"])
        r = await gateway.client.get(f"/api/billing/dispute-export?month={month:%Y-%m}", headers=auth(key))
        assert len((await r.text()).strip().splitlines()) == n + 2  # csv header + rows + summary
        r = await gateway.client.get(f"/api/usage?month={month:%Y-%m}", headers=auth(key))
        usage = await r.json()
        assert (usage["site_id"], usage["events"], usage["quantity"]) == (str(site), n, 2 * n)
    r = await gateway.client.get("/api/usage?month=2026-13", headers=auth(key_a))
    assert r.status == 400


async def test_ops_routes_and_slo_rollup(gateway: Gateway, pool: asyncpg.Pool) -> None:
    assert (await gateway.client.get("/healthz")).status == 200
    r = await gateway.client.get("/readyz")
    assert r.status == 200 and (await r.json())["kafka"] == "closed"
    text = await (await gateway.client.get("/metrics")).text()
    for name in (
        "opsmantik_http_requests_total",
        "opsmantik_http_request_duration_seconds_bucket",
        "opsmantik_gateway_events_total",
        "opsmantik_gateway_breaker_state",
        "opsmantik_gateway_producer_queue_depth",
    ):
        assert name in text, name
    assert 'code="429",route="/api/sync"' in text or 'route="/api/sync",code="429"' in text
    await gateway.state.rollup.flush(pool)
    async with pool.acquire() as conn:
        row = await conn.fetchrow("SELECT sum(requests) AS n, sum(rate_limited) AS rl FROM slo_requests")
    assert row["n"] > 0 and row["rl"] >= 1
    await gateway.state.status.refresh(full=True)  # the page's background refresh, now
    r = await gateway.client.get("/status?format=json")
    snap = await r.json()
    avail = next(o for o in snap["slo"]["objectives"] if o["id"] == "availability")
    assert f"of {row['n']:,} ingest requests" in avail["description"]
    r = await gateway.client.get("/status")
    assert r.status == 200 and "Availability" in await r.text()
    assert (await gateway.client.get("/nope")).status == 404
    assert (await gateway.client.get("/api/sync")).status == 405
