"""A forged-key flood against a real gateway process, on a private stack (tests/support/stacks.py,
free ports): 32 connections of fresh well-formed forged keys in 1 s slices (FLOOD_S of them, a
pause after each) while one site sends 100 events/s, with the broker up and then with the broker
stopped (the outbox path). The site sees only 200s, each of them reaches the ledger (directly, or
outbox → relay → ledger once the broker is back), the attacker sees only 401/429, and Postgres
sees at most 50 key lookups a second (idx_scan of the api_keys lookup index) (docs/reliability.md
"Forged-key flood"; the flood itself: tests/support/key_flood.py).

What the flood costs the site's latency is a speed figure, measured by the key-flood bench
(`make bench ONLY=key-flood`, docs/benchmarks.md), and printed here: on this 2-core machine the
attacker, the gateway and a broker still warming its JIT share the cores with whatever else runs.
A p95 ratio asserted here failed on a quiet machine in 3 of 4 runs (25-50 ms against 9-13 ms,
broker up; 1.3x with it stopped), and an absolute 500 ms bound failed beside make test's lanes and
three benchmarks (load average 9: 297 ms unflooded, 683 ms flooded)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
import uuid
from pathlib import Path

import asyncpg
import orjson
import pytest
from opsmantik.config import Settings
from opsmantik.devstack.stack import Stack
from opsmantik.sites import create_site_with_key

from tests.support.key_flood import CONNECTIONS, EVENTS_PER_S, Sent, flood, legit_load
from tests.support.pipeline import env_for
from tests.support.process import Process, free_port
from tests.support.stacks import stack_fixture, stack_settings

FLOOD_S = 6.0  # of flooding, in 1 s slices
MAX_LOOKUPS_PER_S = 50
LOOKUP_INDEX = "api_keys_key_hash_key"

stack = stack_fixture("key-flood")
pytestmark = pytest.mark.own_stack


@pytest.fixture(scope="module")
async def private(stack: Stack, base_settings: Settings) -> tuple[Stack, Settings, Path]:
    return stack, await stack_settings(base_settings, stack, topic_partitions=2), stack.home


async def lookup_scans(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(
            await conn.fetchval(
                "SELECT idx_scan FROM pg_stat_user_indexes WHERE indexrelname = $1", LOOKUP_INDEX
            )
        )
    finally:
        await conn.close()


async def flood_round(settings: Settings, log_dir: Path, key: str, tag: str) -> list[Sent]:
    """A fresh gateway: the site's load through the flood's slices and pauses; the gateway stops
    before the idx_scan reading so every backend has flushed its statistics."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # The production pool size (tests/support/pipeline.py pins 3 for the other tests).
    env = env_for(settings, db_pool_max=Settings().db_pool_max)
    gw = Process.opsmantik(f"gateway-{tag}", ["gateway", "--port", str(port)], env, log_dir).start()
    try:
        await gw.wait_http(url + "/healthz", 30)
        await legit_load(url, key, 1.0, f"{tag}-warm")  # key cached, breaker settled
        before = await lookup_scans(settings.database_url)
        result = await flood(url, key, FLOOD_S, tag)
    finally:
        gw.stop()
    after = await lookup_scans(settings.database_url)
    base, flooded = result.samples()
    base_p95, flood_p95 = result.p95s_s()
    figures = {
        "attacker": result.attacker,
        "reasons": result.reasons,
        "lookups": after - before,
        "lookups_per_s": (after - before) / FLOOD_S,  # per second of flooding
        "base_p95_ms": base_p95 * 1000,  # printed: latency is the bench's (the module's doc)
        "flood_p95_ms": flood_p95 * 1000,
        "samples": [len(base), len(flooded)],
        "legit_non200": sum(s.status != 200 for s in result.sent),
    }
    print(f"\nkey flood ({tag}): {orjson.dumps(figures).decode()}", file=sys.stderr)
    statuses = result.attacker["statuses"]
    assert set(statuses) <= {"401", "429"}, f"the attacker got {statuses}"
    assert sum(statuses.values()) > CONNECTIONS * FLOOD_S, "the flood did not flood"
    assert figures["legit_non200"] == 0, [s.status for s in result.sent if s.status != 200][:20]
    assert min(len(base), len(flooded)) >= 0.7 * FLOOD_S * EVENTS_PER_S, figures
    assert result.reasons.get("bad_mac", 0) >= result.attacker["shapes"].get("tagged", 0), figures
    assert figures["lookups_per_s"] <= MAX_LOOKUPS_PER_S, figures
    return result.sent


async def ledger_ids(url: str, site_id: uuid.UUID) -> set[str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT event_id FROM ingest_idempotency WHERE site_id = $1", site_id)
    finally:
        await conn.close()
    return {r["event_id"] for r in rows}


async def test_forged_key_flood_broker_up_then_down(private: tuple[Stack, Settings, Path]) -> None:
    stack, settings, home = private
    conn = await asyncpg.connect(settings.database_url)
    site = await create_site_with_key(conn, "flood", rate=1e6, burst=1_000_000)
    await conn.close()
    log_dir = home / "logs"
    log_dir.mkdir()
    worker = Process.opsmantik("worker", ["worker"], env_for(settings), log_dir).start()
    relay = Process.opsmantik("relay", ["relay"], env_for(settings), log_dir).start()
    try:
        acked_up = await flood_round(settings, log_dir, site.api_key, "up")
        broker = stack.kafka_pid()
        assert broker
        os.kill(broker, signal.SIGSTOP)  # stopped: nothing is acknowledged, events go to the outbox
        try:
            acked_down = await flood_round(settings, log_dir, site.api_key, "down")
        finally:
            os.kill(broker, signal.SIGCONT)
        acked = {s.event_id for s in acked_up + acked_down if s.status == 200}
        # A broker stopped past the worker's 10 s session timeout costs the worker its group: it
        # rejoins after the SIGCONT and catches up (0.6-12.3 s in the broker-pause soak,
        # docs/worker.md "Rebalances"; before 7b14946 such a rejoin could commit past records it had
        # not ledgered, and they never came).
        deadline = time.monotonic() + 90
        while not acked <= (ledgered := await ledger_ids(settings.database_url, site.site_id)):
            assert time.monotonic() < deadline, (
                f"{len(acked - ledgered)} acknowledged events not in the ledger\n"
                f"{worker.tail()}\n{relay.tail()}"
            )
            await asyncio.sleep(0.5)
        print(f"\nkey flood: {len(acked)} acknowledged events, all in the ledger", file=sys.stderr)
    finally:
        worker.stop()
        relay.stop()
