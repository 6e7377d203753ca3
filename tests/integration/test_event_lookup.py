"""Event lookup (GET /api/v1/events/{event_id}, GET /api/v1/events?status=dead_lettered), subjects
at their edge and operator tokens, through the deployed gateway and worker on the real Kafka and
Postgres (issue 26). The module runs no relay until its last test, so an outbox row stays put
while it is looked up; the last test starts the relay and watches the row reach the ledger."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from opsmantik.config import Settings
from opsmantik.gateway.cloudevents import ledger_event_id
from opsmantik.kafka.settings import message_key
from opsmantik.months import month_start

from tests.support.billing import cli
from tests.support.gateway import new_site
from tests.support.pipeline import insert_outbox, message, pipeline_fixture, produce, wait_for

pytestmark = pytest.mark.integration
# No relay: the outbox rows of test_outbox stay until test_relay_moves_outbox_to_ledger starts it.
pipeline = pipeline_fixture("gateway", "worker", "audit", relay_in_tests=True)
ARCHIVED = date(2024, 2, 1)  # used by no other test: closed and archived here
CE = "application/cloudevents+json"


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


def now_event(event_id: str, **over: object) -> dict[str, object]:
    return {"event_id": event_id, "type": "api_call", "occurred_at": datetime.now(UTC).isoformat(), **over}


@pytest.fixture(scope="module")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture(scope="module")
async def two_sites(pool: asyncpg.Pool) -> tuple[tuple[uuid.UUID, str], tuple[uuid.UUID, str]]:
    return await new_site(pool), await new_site(pool)


async def lookup(
    http: aiohttp.ClientSession, url: str, key: str, event_id: str, **query: str
) -> tuple[int, dict[str, Any]]:
    async with http.get(f"{url}/api/v1/events/{event_id}", params=query, headers=bearer(key)) as r:
        return r.status, await r.json()


async def sync(http: aiohttp.ClientSession, url: str, key: str, body: object) -> tuple[int, dict[str, Any]]:
    async with http.post(f"{url}/api/sync", json=body, headers=bearer(key)) as r:
        return r.status, await r.json()


async def test_ledgered_and_site_isolation(pipeline, http, two_sites) -> None:  # type: ignore[no-untyped-def]
    (site_a, key_a), (_site_b, key_b) = two_sites
    status, _ = await sync(http, pipeline.url, key_a, now_event("led-1", quantity=3))
    assert status == 200

    async def ledgered() -> bool:
        return (await lookup(http, pipeline.url, key_a, "led-1"))[0] == 200

    await wait_for(ledgered, timeout_s=30)
    status, body = await lookup(http, pipeline.url, key_a, "led-1")
    month = datetime.now(UTC).strftime("%Y-%m")
    assert body["status"] == "ledgered" and body["quantity"] == 3 and body["type"] == "api_call"
    assert body["billing_month"] == body["usage_month"] == month and body["billing_class"] == "included"
    assert body["voided"] is False and body["voided_at"] is None
    # Site isolation: another site's key never sees it, nor reaches it with site_id.
    status, body = await lookup(http, pipeline.url, key_b, "led-1")
    assert status == 404 and body["status"] == "unknown", body
    status, body = await lookup(http, pipeline.url, key_b, "led-1", site_id=str(site_a))
    assert status == 403 and body["error"] == "forbidden", body


async def test_voided_event_says_so(pipeline, http, two_sites, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    (site_a, key_a), _ = two_sites
    assert (await sync(http, pipeline.url, key_a, now_event("void-1")))[0] == 200
    await wait_for(lambda: _status_is(http, pipeline.url, key_a, "void-1", "ledgered"), timeout_s=30)
    r = cli(settings, "events", "void", str(site_a), "void-1", "--reason", "test")
    assert r.returncode == 0, r.stderr
    _, body = await lookup(http, pipeline.url, key_a, "void-1")
    assert body["voided"] is True and body["void_booked_month"] == body["billing_month"], body


async def _status_is(http: aiohttp.ClientSession, url: str, key: str, event_id: str, want: str) -> bool:
    return (await lookup(http, url, key, event_id))[1].get("status") == want


async def test_outbox(pipeline, http, pool: asyncpg.Pool, two_sites) -> None:  # type: ignore[no-untyped-def]
    (site_a, key_a), (_, key_b) = two_sites
    await insert_outbox(pool, site_a, ["out-1"])
    status, body = await lookup(http, pipeline.url, key_a, "out-1")
    assert status == 200 and body["status"] == "outbox" and body["parked"] is False, body
    assert isinstance(body["outbox_id"], int) and body["attempts"] == 0
    assert (await lookup(http, pipeline.url, key_b, "out-1"))[0] == 404


async def test_dead_letter_and_list(pipeline, http, settings: Settings, two_sites) -> None:  # type: ignore[no-untyped-def]
    (site_a, key_a), (_, key_b) = two_sites
    bad = json.loads(message(site_a, "dead-1"))
    bad["quantity"] = 0  # not an event.v1 message: the worker dead-letters it with the reason
    produce(settings, [(message_key(settings, site_a, "dead-1"), json.dumps(bad).encode())])
    await wait_for(lambda: _status_is(http, pipeline.url, key_a, "dead-1", "dead_lettered"), timeout_s=30)
    _, body = await lookup(http, pipeline.url, key_a, "dead-1")
    assert "quantity" in str(body["reason"]) and body["dead_lettered_at"], body
    async with http.get(
        f"{pipeline.url}/api/v1/events", params={"status": "dead_lettered"}, headers=bearer(key_a)
    ) as r:
        listed = await r.json()
    assert r.status == 200 and [e["event_id"] for e in listed["events"]] == ["dead-1"], listed
    async with http.get(
        f"{pipeline.url}/api/v1/events", params={"status": "dead_lettered"}, headers=bearer(key_b)
    ) as r:
        assert (await r.json())["events"] == []  # site B sees none of site A's dead letters
    for query, field in (
        ({"status": "dead_lettered", "limit": "1000"}, None),
        ({"status": "dead_lettered", "limit": "1001"}, "limit"),
        ({"status": "dead_lettered", "limit": "0"}, "limit"),
        ({"status": "ledgered"}, "status"),
        ({}, "status"),
    ):
        async with http.get(f"{pipeline.url}/api/v1/events", params=query, headers=bearer(key_a)) as r:
            body = await r.json()
            assert (r.status, field) == (200, None) or (r.status, body["details"][0]["field"]) == (400, field)


SEED = """
INSERT INTO ingest_idempotency (site_id, event_id, event_type, occurred_at, usage_month, billing_month,
    quantity, billing_class, path, received_at)
VALUES ($1, 'old-1', 'api_call', $2, $3, $3, 1, 'included', 'kafka', $2)
"""


async def test_archived(pipeline, http, settings: Settings, pool: asyncpg.Pool, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    site, key = await new_site(pool)
    async with pool.acquire() as conn:
        await conn.fetchval("SELECT ledger_ensure_partition($1)", ARCHIVED)
        await conn.execute(SEED, site, month_start(ARCHIVED) + timedelta(hours=1), ARCHIVED)
        await conn.execute(
            "INSERT INTO site_usage_monthly (site_id, month, events, quantity) VALUES ($1, $2, 1, 1)",
            site,
            ARCHIVED,
        )
    status, body = await lookup(http, pipeline.url, key, "old-1")
    assert status == 200 and body["status"] == "ledgered" and body["usage_month"] == "2024-02"
    for args in (
        ("billing", "close", "--month", "2024-02"),
        ("archive", "--month", "2024-02", "--to", str(tmp_path)),
    ):
        r = cli(settings, *args)
        assert r.returncode == 0, r.stderr
    status, body = await lookup(http, pipeline.url, key, "old-1")
    assert status == 200 and body["status"] == "archived" and body["archived_months"] == ["2024-02"], body
    status, body = await lookup(http, pipeline.url, key, "never-sent")
    assert status == 200 and body["status"] == "archived"  # may be in the archive: said, not guessed
    other, other_key = await new_site(pool)
    status, body = await lookup(http, pipeline.url, other_key, "old-1")
    assert status == 404 and body == {
        "event_id": "old-1",
        "status": "unknown",
        "message": "no such event for this site: not ledgered, queued or dead-lettered",
    }


async def test_bad_input_is_400_naming_the_parameter(pipeline, http, two_sites) -> None:  # type: ignore[no-untyped-def]
    (_, key), _ = two_sites
    for event_id, query, field in (
        ("a%20b", {}, "event_id"),
        ("x" * 129, {}, "event_id"),
        ("ok", {"source": "a b"}, "source"),
        ("ok", {"source": ""}, "source"),
        ("x" * 257, {"source": "s"}, "event_id"),
        ("ok", {"site_id": "nope"}, "site_id"),
    ):
        status, body = await lookup(http, pipeline.url, key, event_id, **query)
        assert status == 400 and body["details"][0]["field"] == field, (event_id, query, body)
    async with http.get(f"{pipeline.url}/api/v1/events/x") as r:
        assert r.status == 401


async def test_subject_edge_over_http_and_cloudevents(pipeline, http, two_sites) -> None:  # type: ignore[no-untyped-def]
    (_, key), _ = two_sites
    status, body = await sync(http, pipeline.url, key, now_event("subj-256", subject="s" * 256))
    assert status == 200, body
    status, body = await sync(http, pipeline.url, key, now_event("subj-257", subject="s" * 257))
    assert status == 400 and [d["field"] for d in body["details"]] == ["subject"], body
    ce = {"specversion": "1.0", "id": "c-1", "source": "lookup-test", "type": "api_call"}
    for subject, want in (("s" * 256, 204), ("s" * 257, 400)):
        data = json.dumps({**ce, "subject": subject})
        async with http.post(
            f"{pipeline.url}/api/v1/events", data=data, headers={**bearer(key), "Content-Type": CE}
        ) as r:
            assert r.status == want
            if want == 400:
                assert [d["field"] for d in (await r.json())["details"]] == ["subject"]
    # The CloudEvent is found by its source and id, and by its ledger id.
    ledger_id = ledger_event_id("lookup-test", "c-1")
    await wait_for(lambda: _status_is(http, pipeline.url, key, ledger_id, "ledgered"), timeout_s=30)
    status, body = await lookup(http, pipeline.url, key, "c-1", source="lookup-test")
    assert status == 200 and body["event_id"] == ledger_id and body["source"] == "lookup-test", body
    assert (await lookup(http, pipeline.url, key, "c-1", source="other-source"))[0] == 404


async def test_operator_token(pipeline, http, settings: Settings, pool: asyncpg.Pool, two_sites) -> None:  # type: ignore[no-untyped-def]
    (site_a, key_a), _ = two_sites
    r = cli(settings, "tokens", "create", "--operator", "--name", "lookup-test", "--json")
    assert r.returncode == 0, r.stderr
    made = json.loads(r.stdout)
    token, token_id = made["token"], uuid.UUID(made["token_id"])
    stored = await pool.fetchrow("SELECT * FROM operator_tokens WHERE token_id = $1", token_id)
    assert bytes(stored["token_hash"]) == hashlib.sha256(token.encode()).digest()
    assert token not in str(dict(stored))  # only the hash (and a 10-character prefix)
    # The operator reads any site's event, naming the site; a site key is not needed.
    status, body = await lookup(http, pipeline.url, token, "led-1", site_id=str(site_a))
    assert status == 200 and body["status"] == "ledgered", body
    status, body = await lookup(http, pipeline.url, token, "led-1")
    assert status == 400 and body["details"][0]["field"] == "site_id"
    # ... and is no site key: the ingest routes refuse it.
    status, body = await sync(http, pipeline.url, token, now_event("op-1"))
    assert status == 401 and "operator token" in str(body["message"]), body
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    assert (await lookup(http, pipeline.url, forged, "led-1", site_id=str(site_a)))[0] == 401
    r = cli(settings, "tokens", "list", "--json")
    assert r.returncode == 0 and token not in r.stdout
    assert any(t["token_id"] == str(token_id) and t["revoked_at"] is None for t in json.loads(r.stdout))
    r = cli(settings, "tokens", "revoke", str(token_id))
    assert r.returncode == 0, r.stderr
    status, body = await lookup(http, pipeline.url, token, "led-1", site_id=str(site_a))
    assert status == 401, body  # refused from the next request
    r = cli(settings, "tokens", "revoke", str(token_id))
    assert r.returncode == 1
    assert token not in pipeline.gateway.tail(100000)  # never logged
    assert key_a  # the site key stays valid


async def test_relay_moves_outbox_to_ledger(pipeline, http, two_sites) -> None:  # type: ignore[no-untyped-def]
    """Last: the relay drains test_outbox's row, which the lookup then finds in the ledger."""
    (_, key_a), _ = two_sites
    pipeline.start_one("relay")
    await wait_for(lambda: _status_is(http, pipeline.url, key_a, "out-1", "ledgered"), timeout_s=30)
    _, body = await lookup(http, pipeline.url, key_a, "out-1")
    assert body["path"] == "fallback"
