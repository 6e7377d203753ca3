"""A forged-key flood against a real gateway process, on a private stack (tests/support/stacks.py,
free ports): 32 connections of fresh well-formed forged keys for
10 s while one site sends 100 events/s, with the broker up and then with the broker stopped (the
outbox path). The site sees only 200s, each of them reaches the ledger (directly, or outbox →
relay → ledger once the broker is back), the attacker sees only 401/429, Postgres sees at most 50
key lookups a second (idx_scan of the api_keys lookup index), and the site's p95 stays within 2×
of its unflooded p95 on the same gateway (docs/reliability.md "Forged-key flood").

The flood comes in 1 s slices with 1 s pauses between them, and the site's requests sent in the
pauses are the unflooded baseline: the two samples interleave, so whatever else loads the machine
(make test runs a second lane beside this one) weighs on both alike."""

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
FLOOD_S = 10.0  # of flooding, in slices
SLICE_S = 1.0  # a flood slice, then a pause as long (the baseline)
GUARD_S = 0.2  # requests sent this soon after a slice starts or ends are in neither sample
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
# A private stack; a latency ratio that needs the gateway's headroom: after the lanes (scripts/test.sh).
pytestmark = [pytest.mark.own_stack, pytest.mark.alone]


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


async def legit_load(url: str, key: str, seconds: float, tag: str, start: float | None = None) -> list[Sent]:
    """Open loop: one single-event request every 1/EVENTS_PER_S s from `start` (a time.monotonic()
    value; default now), whatever the answers take."""
    sent: list[Sent] = []
    async with aiohttp.ClientSession() as http:

        async def one(i: int) -> None:
            eid = f"{tag}-{i}"
            body = orjson.dumps({"events": [event(eid)]})
            t0 = time.monotonic()
            async with http.post(url + "/api/sync", data=body, headers=auth(key)) as r:
                await r.read()
                sent.append(Sent(t0, time.monotonic() - t0, r.status, eid))

        start = time.monotonic() if start is None else start
        tasks = []
        for i in range(int(seconds * EVENTS_PER_S)):
            await asyncio.sleep(max(0.0, start + i / EVENTS_PER_S - time.monotonic()))
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
    return sent


async def attack(url: str, start: float) -> dict:
    """The attacker at nice 10: in production its CPU is not the gateway host's; here the figure
    should be what the flood costs the gateway, not what the attacker's own loop costs the
    shared machine (it still sends hundreds of requests a second, asserted below)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.integration.flood_attacker",
        url,
        str(CONNECTIONS),
        str(FLOOD_S),
        str(start),
        str(SLICE_S),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        preexec_fn=lambda: os.nice(10),
    )
    out, _ = await asyncio.wait_for(proc.communicate(), start - time.monotonic() + 2 * FLOOD_S + 30)
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


def split(sent: list[Sent], start: float) -> tuple[list[Sent], list[Sent]]:
    """The requests sent in pauses (baseline) and in flood slices, each away from a slice's edges."""
    base: list[Sent] = []
    flooded: list[Sent] = []
    for s in sent:
        into = s.t0 - start
        if into < 0 or into % SLICE_S < GUARD_S:
            continue
        (flooded if int(into // SLICE_S) % 2 == 0 else base).append(s)
    return base, flooded


async def flood_round(settings: Settings, log_dir: Path, key: str, tag: str) -> tuple[list[Sent], dict]:
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
        start = time.monotonic() + 1.5  # the attacker's interpreter starts meanwhile
        attacker, sent = await asyncio.gather(
            attack(url, start), legit_load(url, key, 2 * FLOOD_S, tag, start)
        )
        reasons = await refusals(url)
    finally:
        gw.stop()
    after = await lookup_scans(settings.database_url)
    base, flooded = split(sent, start)
    base_p95, flood_p95 = p95([s.latency for s in base]), p95([s.latency for s in flooded])
    figures = {
        "attacker": attacker,
        "reasons": reasons,
        "lookups": after - before,
        "lookups_per_s": (after - before) / FLOOD_S,  # per second of flooding
        "base_p95_ms": base_p95 * 1000,
        "flood_p95_ms": flood_p95 * 1000,
        "samples": [len(base), len(flooded)],
        "legit_non200": sum(s.status != 200 for s in sent),
    }
    print(f"\nkey flood ({tag}): {orjson.dumps(figures).decode()}", file=sys.stderr)
    statuses = attacker["statuses"]
    assert set(statuses) <= {"401", "429"}, f"the attacker got {statuses}"
    assert sum(statuses.values()) > CONNECTIONS * FLOOD_S, "the flood did not flood"
    assert figures["legit_non200"] == 0, [s.status for s in sent if s.status != 200][:20]
    assert min(len(base), len(flooded)) >= 0.7 * FLOOD_S * EVENTS_PER_S, figures
    assert reasons.get("bad_mac", 0) >= attacker["shapes"].get("tagged", 0), reasons  # no lookup for those
    assert figures["lookups_per_s"] <= MAX_LOOKUPS_PER_S, figures
    assert flood_p95 <= P95_RATIO * max(base_p95, P95_FLOOR_S), figures
    return sent, figures


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
