"""The official `openmeter` Python SDK (PyPI, the dev extra) as the client of our meter routes:
it lists the meters and reads the same values as JSON (query_json) and CSV (query_csv)."""

from __future__ import annotations

import asyncio
import csv
import io
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import openmeter
import pytest
from aiohttp.test_utils import TestServer
from opsmantik import sites
from opsmantik.config import Settings
from opsmantik.gateway.app import create_app

from tests.support.pipeline import message, pipeline_fixture, produce, wait_for

pytestmark = pytest.mark.integration
pipeline = pipeline_fixture("worker", "relay")


@pytest.fixture(scope="module")
async def server(settings: Settings) -> AsyncIterator[TestServer]:
    s = TestServer(create_app(settings, publisher=None))
    await s.start_server()
    yield s
    await s.close()


async def test_the_openmeter_sdk_lists_meters_and_reads_json_and_csv(
    settings: Settings, pool: asyncpg.Pool, pipeline: Any, server: TestServer
) -> None:
    async with pool.acquire() as conn:
        key = await sites.create_site_with_key(conn, f"sdk-{uuid.uuid4().hex[:6]}")
    at = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=3)
    produce(
        settings,
        [
            (
                f"{key.site_id}/s{i}".encode(),
                message(key.site_id, f"s{i}", quantity=i + 1, occurred_at=at + timedelta(minutes=i % 2)),
            )
            for i in range(6)
        ],
    )

    async def ledgered() -> bool:
        n = await pool.fetchval("SELECT count(*) FROM ingest_idempotency WHERE site_id = $1", key.site_id)
        return bool(n == 6)

    await wait_for(ledgered, timeout_s=60)
    client = openmeter.Client(endpoint=str(server.make_url("")).rstrip("/"), token=key.api_key)

    def read() -> tuple[list[Any], Any, str]:
        meters = client.meters.list()
        kw = {"from_parameter": at, "to": at + timedelta(minutes=2), "window_size": "MINUTE"}
        return meters, client.meters.query_json("quantity", **kw), client.meters.query_csv("quantity", **kw)

    meters, as_json, as_csv = await asyncio.to_thread(read)
    assert {"events", "quantity"} <= {m.slug for m in meters}
    want = [sum(i + 1 for i in range(6) if i % 2 == w) for w in (0, 1)]
    assert [r.value for r in as_json.data] == want
    assert [r.window_start for r in as_json.data] == [at, at + timedelta(minutes=1)]
    rows = list(csv.DictReader(io.StringIO(as_csv)))
    assert [float(r["value"]) for r in rows] == want


async def test_the_operator_reads_every_site_by_customer_id(
    settings: Settings, pool: asyncpg.Pool, pipeline: Any, server: TestServer
) -> None:
    from opsmantik.tokens import create_token

    async with pool.acquire() as conn:
        keys = [await sites.create_site_with_key(conn, f"op-{uuid.uuid4().hex[:6]}") for _ in range(2)]
        op = await create_token(conn, f"op-{uuid.uuid4().hex[:6]}", secret=settings.key_secret)
    at = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=2)
    produce(
        settings,
        [
            (f"{k.site_id}/o{i}".encode(), message(k.site_id, f"o{i}", quantity=10 * s + 1, occurred_at=at))
            for s, k in enumerate(keys)
            for i in range(3)
        ],
    )

    async def ledgered() -> bool:
        n = await pool.fetchval(
            "SELECT count(*) FROM ingest_idempotency WHERE site_id = ANY($1)", [k.site_id for k in keys]
        )
        return bool(n == 6)

    await wait_for(ledgered, timeout_s=60)
    client = openmeter.Client(endpoint=str(server.make_url("")).rstrip("/"), token=op.token)
    ids = [str(k.site_id) for k in keys]

    def read() -> Any:
        return client.meters.query_json(
            "quantity",
            from_parameter=at,
            to=at + timedelta(minutes=1),
            filter_customer_id=ids,
            group_by=["customer_id"],
        )

    answer = await asyncio.to_thread(read)
    got = {r.customer_id: r.value for r in answer.data}
    assert got == {ids[0]: 3, ids[1]: 33}
    site_key = openmeter.Client(endpoint=str(server.make_url("")).rstrip("/"), token=keys[0].api_key)
    with pytest.raises(Exception, match="400|filterCustomerId"):
        await asyncio.to_thread(
            lambda: site_key.meters.query_json("quantity", from_parameter=at, filter_customer_id=[ids[1]])
        )
