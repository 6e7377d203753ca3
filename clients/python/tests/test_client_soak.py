"""The producer client's long form (`make client-soak`; skipped otherwise): 100,000 events
through the real gateway, worker, relay and Kafka on a private stack (tests/support/stacks.py:
free ports, a fresh directory) while the gateway is SIGKILLed and restarted twice and
the broker is stopped once. Every event must be in the ledger exactly once and the client
must report an outcome for each. The bounded form runs in `make test` (test_client.py)."""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from client_support import (
    ledger_event_ids,
    new_site,
    numbered,
    wait_ledger,
)
from opsmantik.config import Settings
from opsmantik.devstack.stack import Stack
from opsmantik_client import AsyncClient, Backoff, Result

from tests.support.pipeline import Pipeline, env_for
from tests.support.process import Process
from tests.support.stacks import stack_fixture, stack_settings

pytestmark = [
    pytest.mark.integration,
    pytest.mark.own_stack,
    pytest.mark.skipif(os.environ.get("OPSMANTIK_CLIENT_SOAK") != "1", reason="long form: make client-soak"),
]

TOTAL = int(os.environ.get("OPSMANTIK_CLIENT_SOAK_EVENTS", "100000"))
STORED = {"accepted", "overlimit", "degraded", "fallback"}


soak_stack = stack_fixture("client-soak")  # stopped after, whatever happened: no JVM left behind


@pytest.fixture(scope="module")
async def soak_settings(soak_stack: Stack) -> Settings:
    return await stack_settings(Settings(), soak_stack)


@pytest.fixture(scope="module")
async def soak_pool(soak_settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    p = await asyncpg.create_pool(soak_settings.database_url, min_size=1, max_size=3)
    yield p
    await p.close()


def say(msg: str) -> None:
    print(f"[client-soak {time.strftime('%H:%M:%S')}] {msg}", flush=True)


async def test_100k_events_through_gateway_kills_and_a_broker_stop(
    soak_stack: Stack, soak_settings: Settings, soak_pool: asyncpg.Pool, tmp_path: Path
) -> None:
    site, key = await new_site(soak_pool)
    worker = Process.opsmantik("worker", ["worker"], env_for(soak_settings), tmp_path).start()
    relay = Process.opsmantik("relay", ["relay"], env_for(soak_settings), tmp_path).start()
    gw = await asyncio.to_thread(Pipeline.start, soak_settings, tmp_path / "gw", ("gateway",))
    results: dict[str, Result] = {}
    events: list[str] = []
    client = AsyncClient(
        gw.url,
        key,
        spill_path=str(tmp_path / "spill"),
        receipts=False,
        on_result=lambda r: results.__setitem__(r.event_id, r),
        backoff=Backoff(base_s=0.05, cap_s=1.0),
    )

    async def until(n: int) -> int:
        while len(results) < n:
            await asyncio.sleep(0.01)
        return len(results)

    faults: list[tuple[str, int]] = []

    async def gateway_kills() -> None:
        for n, at in enumerate((TOTAL * 15 // 100, TOTAL * 85 // 100), 1):
            faults.append((f"gateway SIGKILL #{n}", await until(at)))
            say(f"{faults[-1][0]} at {faults[-1][1]:,} answered")
            await gw.kill_restart("gateway")

    async def broker_stop() -> None:
        faults.append(("broker stop", await until(TOTAL * 30 // 100)))
        say(f"stopping the broker at {faults[-1][1]:,} answered")
        await asyncio.to_thread(soak_stack.kafka_down)
        faults.append(("broker start", await until(TOTAL * 40 // 100)))  # these go to the outbox
        say(f"starting the broker at {faults[-1][1]:,} answered")
        await asyncio.to_thread(soak_stack.kafka_up)
        say(f"broker up at {len(results):,} answered")

    chaos = [asyncio.create_task(gateway_kills()), asyncio.create_task(broker_stop())]
    t0 = time.monotonic()
    try:
        async with client:
            for i in range(0, TOTAL, 500):
                # A steady stream (≈ 3,300 events/s) so that every fault lands mid-stream.
                await asyncio.sleep(0.15)
                await client.wait_pending(3_000)
                tickets = await client.send_many(numbered(i, min(TOTAL, i + 500)))
                events += [t.event_id for t in tickets]
            assert await client.flush(300), client.counters
            await asyncio.wait_for(asyncio.gather(*chaos), 120)
        say(f"client done in {time.monotonic() - t0:.0f} s: {client.counters}")
        outcomes = Counter(r.status for r in results.values())
        say(f"outcomes {dict(outcomes)}")
        assert set(results) == set(events) and len(events) == TOTAL  # an outcome for each event
        assert set(outcomes) <= STORED
        assert outcomes["fallback"] > 0  # the broker stop did hit: the outbox took events
        assert client.counters.failures > 0  # the gateway kills did hit requests in flight
        assert all(at < TOTAL for _, at in faults) and len(faults) == 4, faults  # all mid-stream
        count = await wait_ledger(soak_pool, site, TOTAL, timeout_s=300)
        say(f"ledger {count}")
        assert count.exactly_once(TOTAL), count
        assert await ledger_event_ids(soak_pool, site) == set(events)
    finally:
        for task in chaos:
            task.cancel()
        gw.stop()
        for p in (relay, worker):
            p.stop()
