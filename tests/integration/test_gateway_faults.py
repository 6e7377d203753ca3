"""Engines killed under the gateway, on a private stack (tests/support/stacks.py, free ports) so
the shared one is never touched: no 200 unless every event is on the topic or in the outbox;
both down → 503 and nothing appears later."""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import time

import asyncpg
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from opsmantik.config import Settings
from opsmantik.devstack.stack import Stack
from opsmantik.gateway.app import create_app
from opsmantik.sites import create_site_with_key

from tests.support.gateway import auth, event, read_topic
from tests.support.stacks import stack_fixture, stack_settings

stack = stack_fixture("gw-faults")
pytestmark = pytest.mark.own_stack  # a private stack: make test's own-stack lane (scripts/test.sh)


@pytest.fixture(scope="module")
async def private(stack: Stack, base_settings: Settings) -> tuple[Stack, Settings]:
    return stack, await stack_settings(base_settings, stack, topic_partitions=2)


async def _outbox_ids(url: str, event_ids: set[str]) -> set[str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT event_id FROM ingest_fallback_buffer WHERE event_id = ANY($1)", list(event_ids)
        )
    finally:
        await conn.close()
    return {r["event_id"] for r in rows}


async def test_broker_sigkill_under_load_then_both_down(private: tuple[Stack, Settings]) -> None:
    stack, settings = private
    conn = await asyncpg.connect(settings.database_url)
    key = (await create_site_with_key(conn, "faults", rate=1e6, burst=1_000_000)).api_key
    await conn.close()
    app = create_app(settings)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        # A fresh broker may answer "coordinator load in progress" for a few seconds: until the
        # idempotent producer has its id, events (correctly) go to the outbox. Warm up first so
        # the kill below happens while the Kafka path carries the load.
        for i in range(150):
            r = await client.post(
                "/api/sync", data=orjson.dumps({"events": [event(f"warm-{i}")]}), headers=auth(key)
            )
            if "partition" in (await r.json())["results"][0]["receipt"]:
                break
            await asyncio.sleep(0.2)
        else:
            pytest.fail("the gateway never reached the Kafka path on the fresh broker")
        sent: list[tuple[float, float, int, list[dict]]] = []  # start, latency, status, results
        stop_at = time.monotonic() + 6.0
        kill_at = time.monotonic() + 2.0

        async def load(worker: int) -> None:
            n = 0
            while time.monotonic() < stop_at and n < 2000:
                n += 1
                batch = [event(f"k{worker}-{n}-{j}") for j in range(3)]
                t0 = time.monotonic()
                r = await client.post("/api/sync", data=orjson.dumps({"events": batch}), headers=auth(key))
                body = await r.json()
                sent.append((t0, time.monotonic() - t0, r.status, body.get("results", [])))

        async def killer() -> None:
            await asyncio.sleep(max(0.0, kill_at - time.monotonic()))
            pid = stack.kafka_pid()
            assert pid
            os.kill(pid, signal.SIGKILL)

        await asyncio.gather(killer(), *(load(w) for w in range(4)))
        statuses = {s for _, _, s, _ in sent}
        assert statuses <= {200}, statuses  # the outbox takes over: nobody sees an error
        by_path = {"kafka": set(), "fallback": set()}
        for _, _, _, results in sent:
            for x in results:
                by_path["fallback" if "outbox_id" in x["receipt"] else "kafka"].add(x["event_id"])
        assert by_path["kafka"] and by_path["fallback"], "the switch happened during the run"
        switch = [lat for t0, lat, _, _ in sent if kill_at - 0.5 <= t0 <= kill_at + 2.0]
        p95 = statistics.quantiles(switch, n=20)[-1]
        print(
            f"\nbroker SIGKILL: {len(sent)} requests, {len(switch)} in the switch window, "
            f"p95 {p95 * 1000:.0f} ms, max {max(switch) * 1000:.0f} ms; "
            f"kafka {len(by_path['kafka'])} events, outbox {len(by_path['fallback'])} events"
        )
        assert await _outbox_ids(settings.database_url, by_path["fallback"]) == by_path["fallback"]
        await asyncio.to_thread(stack.kafka_up)
        on_topic = {m["event_id"] for _, m in await asyncio.to_thread(read_topic, settings)}
        assert by_path["kafka"] <= on_topic, "an event acknowledged by Kafka is missing"

        # Both engines down: 503 for everyone, and nothing appears once they are back.
        pid = stack.kafka_pid()
        assert pid, "the broker restarted above"
        os.kill(pid, signal.SIGKILL)
        await asyncio.to_thread(stack.pg_down)
        refused: set[str] = set()
        codes = []
        for i in range(10):
            ids = [f"dead-{i}-{j}" for j in range(3)]
            r = await client.post(
                "/api/sync", data=orjson.dumps({"events": [event(x) for x in ids]}), headers=auth(key)
            )
            codes.append(r.status)
            if r.status == 503:
                assert (await r.json())["error"] == "unavailable" and r.headers["Retry-After"]
                refused.update(ids)
        assert codes == [503] * 10, codes
        await asyncio.to_thread(stack.up)
        await asyncio.sleep(2.0)
        assert await _outbox_ids(settings.database_url, refused) == set()
        on_topic = {m["event_id"] for _, m in await asyncio.to_thread(read_topic, settings)}
        assert not refused & on_topic, "a refused event appeared later"
    finally:
        await client.close()
