"""Two gateway processes share one site's rate limit through the registry in Postgres
(services/opsmantik/gateway/registry.py); one is SIGKILLed midway and the survivor takes the whole rate.
A module of its own: its database holds no other gateway (an in-process test gateway would
count as a third)."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import asyncpg
import orjson
import pytest
from opsmantik.config import Settings
from opsmantik.sites import create_site_with_key

from tests.support.environment import module_environment
from tests.support.gateway import auth
from tests.support.pipeline import env_for
from tests.support.process import Process, free_port
from tests.support.scale import OpenLoad, event_doc, health, launch_gateway, url_of, wait_gateways_live

# A rate measured per second needs the machine's headroom: after make test's lanes (scripts/test.sh).
pytestmark = [pytest.mark.integration, pytest.mark.alone]

settings, pool = module_environment()


async def test_two_gateways_share_a_sites_rate_and_the_survivor_takes_it_all(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    async with pool.acquire() as conn:
        key = (await create_site_with_key(conn, "shared-rate", rate=100, burst=10)).api_key
        capped = await create_site_with_key(conn, "shared-cap", hard_cap=5)
    beat = {"gateway_heartbeat_s": 0.25, "gateway_dead_after_s": 1.0}
    gws = [launch_gateway(settings, tmp_path, free_port(), **beat) for _ in range(2)]
    try:
        await wait_gateways_live(gws, 2)
        # The hard cap holds on every gateway: both read the same invoice.
        await pool.execute(
            "INSERT INTO site_usage_monthly (site_id, month, events) VALUES ($1, $2, 5)",
            capped.site_id,
            datetime.now(UTC).date().replace(day=1),
        )
        await asyncio.sleep(2 * settings.usage_refresh_s + 0.5)
        async with aiohttp.ClientSession() as s:
            for g in gws:
                async with s.post(
                    url_of(g) + "/api/sync",
                    data=orjson.dumps(event_doc("cap-1")),
                    headers=auth(capped.api_key),
                ) as r:
                    assert r.status == 429 and (await r.json())["error"] == "quota_exceeded"

        killed_at = 5.0
        seconds, rate = 10.0, 300.0

        def pick(i: int, t: float) -> str:
            if t >= killed_at:  # the load balancer sends everything to the survivor
                return url_of(gws[0])
            return url_of(gws[i % 2])

        load = OpenLoad(rate, seconds)

        async def kill_midway() -> None:
            await asyncio.sleep(killed_at)
            gws[1].kill()

        t0 = time.monotonic()
        answers, _ = await asyncio.gather(
            load.run(pick, key, lambda i: event_doc(f"r-{uuid.uuid4().hex[:8]}-{i}")), kill_midway()
        )
        assert time.monotonic() - t0 < seconds + 8
        # Counted by real send time within the 10 s: a sender lagging its schedule on a busy host
        # still offers far more than the 100/s the site may have.
        sent = [a for a in answers if a.at < seconds]
        assert len(sent) >= 2 * 100 * seconds, f"the load generator offered only {len(sent)}"
        ok = [a for a in sent if a.status == 200]
        per_s = [sum(1 for a in ok if int(a.at) == sec) for sec in range(int(seconds))]
        print(f"\n2 gateways: {len(ok)} accepted of {len(sent)} sent in {seconds:g} s; per second {per_s}")
        assert all(a.status in (200, 429, 0) for a in answers), {a.status for a in answers}
        # ±10 % of rate × seconds, the kill included.
        assert 900 <= len(ok) <= 1100, per_s
        # After the heartbeat timeout (1 s + one beat) the survivor alone admits the whole rate.
        late = [a for a in ok if a.at >= killed_at + 1.5]
        window = seconds - (killed_at + 1.5)
        assert 0.9 * 100 * window <= len(late) <= 1.1 * 100 * window + 10, per_s  # + a burst
    finally:
        for g in gws:
            g.stop()


async def test_gateway_workers_n_serves_one_port_from_n_processes(settings: Settings, tmp_path: Path) -> None:
    port = free_port()
    args = ["gateway", "--port", str(port), "--workers", "2"]
    probe = Process.opsmantik("gateway-x2", args, env_for(settings), tmp_path).start()
    try:
        await wait_gateways_live([probe], 2)  # both processes registered
        seen: set[str] = set()
        deadline = time.monotonic() + 20
        while len(seen) < 2 and time.monotonic() < deadline:
            async with aiohttp.ClientSession() as s:  # a new connection each time: the kernel picks
                state = await health(s, probe)
            if state:
                seen.add(str(state["instance"]))
        assert len(seen) == 2, seen
    finally:
        assert probe.stop(20) == 0, probe.tail()
    with socket.socket() as s:  # the children went with the parent
        assert s.connect_ex(("127.0.0.1", port)) != 0
