"""A forged-key flood against a real gateway process, on a private stack (tests/support/stacks.py,
free ports): 32 connections of fresh well-formed forged keys for
10 s while one site sends 100 events/s, with the broker up and then with the broker stopped (the
outbox path). The site sees only 200s, each of them reaches the ledger (directly, or outbox →
relay → ledger once the broker is back), the attacker sees only 401/429, Postgres sees at most 50
key lookups a second (idx_scan of the api_keys lookup index), and the site's p95 stays within 2×
of its unflooded p95 measured just before, on the same gateway (docs/reliability.md
"Forged-key flood")."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import aiohttp
import asyncpg
import orjson
import pytest
from opsmantik.config import Settings
from opsmantik.devstack.stack import Stack
from opsmantik.sites import create_site_with_key

from tests.support.gateway import auth, event
from tests.support.pipeline import env_for
from tests.support.process import ROOT, Process, free_port
from tests.support.stacks import stack_fixture, stack_settings

CONNECTIONS = 32
FLOOD_S = 10.0
BASELINE_S = 2.0  # before and after the flood: the machine's load drifts
EVENTS_PER_S = 100
MAX_LOOKUPS_PER_S = 50
P95_RATIO = 2.0
P95_FLOOR_S = 0.005  # below 5 ms a 2x ratio is timer noise on a shared 2-core machine
LOOKUP_INDEX = "api_keys_key_hash_key"


@dataclasses.dataclass
class Sent:
    t0: float
    latency: float
    status: int
    event_id: str


stack = stack_fixture("key-flood")
pytestmark = pytest.mark.own_stack  # a private stack: make test's second lane (scripts/test.sh)


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


async def legit_load(url: str, key: str, seconds: float, tag: str) -> list[Sent]:
    """Open loop: one single-event request every 1/EVENTS_PER_S s, whatever the answers take."""
    sent: list[Sent] = []
    async with aiohttp.ClientSession() as http:

        async def one(i: int) -> None:
            eid = f"{tag}-{i}"
            body = orjson.dumps({"events": [event(eid)]})
            t0 = time.monotonic()
            async with http.post(url + "/api/sync", data=body, headers=auth(key)) as r:
                await r.read()
                sent.append(Sent(t0, time.monotonic() - t0, r.status, eid))

        start = time.monotonic()
        tasks = []
        for i in range(int(seconds * EVENTS_PER_S)):
            await asyncio.sleep(max(0.0, start + i / EVENTS_PER_S - time.monotonic()))
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
    return sent


async def attack(url: str, seconds: float) -> dict:
    """The attacker at nice 10: in production its CPU is not the gateway host's; here the figure
    should be what the flood costs the gateway, not what the attacker's own loop costs the
    shared machine (it still sends hundreds of requests a second, asserted below)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.integration.flood_attacker",
        url,
        str(CONNECTIONS),
        str(seconds),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        preexec_fn=lambda: os.nice(10),
    )
    out, _ = await asyncio.wait_for(proc.communicate(), seconds + 30)
    assert proc.returncode == 0
    return orjson.loads(out.strip().splitlines()[-1])


async def refusals(url: str) -> dict[str, float]:
    async with aiohttp.ClientSession() as http, http.get(url + "/metrics") as r:
        text = await r.text()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("opsmantik_gateway_auth_refused_total{"):
            reason = line.split('reason="', 1)[1].split('"', 1)[0]
            out[reason] = float(line.rsplit(" ", 1)[1])
    return out


def p95(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=20)[-1]


async def flood_round(settings: Settings, log_dir: Path, key: str, tag: str) -> tuple[list[Sent], dict]:
    """A fresh gateway: baseline, then flood + legit load; the gateway stops before the idx_scan
    reading so every backend has flushed its statistics."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # The production pool size (tests/support/pipeline.py pins 3 for the other tests).
    env = env_for(settings, db_pool_max=Settings().db_pool_max)
    gw = Process.opsmantik(f"gateway-{tag}", ["gateway", "--port", str(port)], env, log_dir).start()
    try:
        await gw.wait_http(url + "/healthz", 30)
        await legit_load(url, key, 1.0, f"{tag}-warm")  # key cached, breaker settled
        base = await legit_load(url, key, BASELINE_S, f"{tag}-base")
        before = await lookup_scans(settings.database_url)
        started = time.monotonic()
        attacker, flooded = await asyncio.gather(
            attack(url, FLOOD_S), legit_load(url, key, FLOOD_S, f"{tag}-flood")
        )
        elapsed = time.monotonic() - started
        reasons = await refusals(url)
        base += await legit_load(url, key, BASELINE_S, f"{tag}-after")  # unflooded, both sides of it
    finally:
        gw.stop()
    after = await lookup_scans(settings.database_url)
    base_p95, flood_p95 = p95([s.latency for s in base]), p95([s.latency for s in flooded])
    figures = {
        "attacker": attacker,
        "reasons": reasons,
        "lookups": after - before,
        "lookups_per_s": (after - before) / elapsed,
        "base_p95_ms": base_p95 * 1000,
        "flood_p95_ms": flood_p95 * 1000,
        "legit_non200": sum(s.status != 200 for s in base + flooded),
    }
    print(f"\nkey flood ({tag}): {orjson.dumps(figures).decode()}", file=sys.stderr)
    statuses = attacker["statuses"]
    assert set(statuses) <= {"401", "429"}, f"the attacker got {statuses}"
    assert sum(statuses.values()) > CONNECTIONS * FLOOD_S, "the flood did not flood"
    assert figures["legit_non200"] == 0, [s.status for s in base + flooded if s.status != 200][:20]
    assert reasons.get("bad_mac", 0) >= attacker["shapes"].get("tagged", 0), reasons  # no lookup for those
    assert figures["lookups_per_s"] <= MAX_LOOKUPS_PER_S, figures
    assert flood_p95 <= P95_RATIO * max(base_p95, P95_FLOOR_S), figures
    return base + flooded, figures


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
        acked_up, _ = await flood_round(settings, log_dir, site.api_key, "up")
        broker = stack.kafka_pid()
        assert broker
        os.kill(broker, signal.SIGSTOP)  # stopped: nothing is acknowledged, events go to the outbox
        try:
            acked_down, _ = await flood_round(settings, log_dir, site.api_key, "down")
        finally:
            os.kill(broker, signal.SIGCONT)
        acked = {s.event_id for s in acked_up + acked_down if s.status == 200}
        # A broker stopped past the worker's session timeout (Faust's 60 s default) costs the worker its
        # group membership: it rejoins and replays after the SIGCONT, which can take longer than 60 s.
        deadline = time.monotonic() + 180
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
