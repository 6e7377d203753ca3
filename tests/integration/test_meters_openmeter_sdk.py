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
