"""A forged-key flood beside one site's paced load, against a running gateway: what
tests/integration/test_key_flood.py asserts on and what the key-flood bench measures
(tests/bench/key_flood.py, docs/reliability.md "Forged-key flood").

The flood comes in slices of SLICE_S with pauses as long between them (tests/support/
flood_attacker.py, its own process at nice 10), and the site's requests sent in the pauses are
the unflooded baseline: the two samples interleave, so whatever else loads the machine weighs on
both alike."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import statistics
import subprocess
import sys
import time

import aiohttp
import orjson

from tests.support.gateway import auth, event
from tests.support.process import ROOT

CONNECTIONS = 32
SLICE_S = 1.0  # a flood slice, then a pause as long (the baseline)
GUARD_S = 0.2  # requests sent this soon after a slice starts or ends are in neither sample
EVENTS_PER_S = 100
P95_FLOOR_S = 0.005  # below 5 ms a ratio of p95s is timer noise on a shared 2-core machine


@dataclasses.dataclass
class Sent:
    t0: float
    latency: float
    status: int
    event_id: str


@dataclasses.dataclass
class Flood:
    """One flood's answers: the attacker's (by status and key shape), the gateway's refusal
    counters after it, and each of the site's requests."""

    attacker: dict
    reasons: dict[str, float]
    sent: list[Sent]
    start: float  # time.monotonic() of the first slice

    def samples(self) -> tuple[list[Sent], list[Sent]]:
        """The site's requests sent in pauses (baseline) and in flood slices, each away from a
        slice's edges."""
        base: list[Sent] = []
        flooded: list[Sent] = []
        for s in self.sent:
            into = s.t0 - self.start
            if into < 0 or into % SLICE_S < GUARD_S:
                continue
            (flooded if int(into // SLICE_S) % 2 == 0 else base).append(s)
        return base, flooded

    def p95s_s(self) -> tuple[float, float]:
        """The site's p95 unflooded and flooded, in seconds."""
        base, flooded = self.samples()
        return p95([s.latency for s in base]), p95([s.latency for s in flooded])

    def p95_ratio(self) -> float:
        base, flooded = self.p95s_s()
        return flooded / max(base, P95_FLOOR_S)


def p95(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=20)[-1]


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


async def attack(url: str, flood_s: float, start: float) -> dict:
    """The attacker at nice 10: in production its CPU is not the gateway host's; here the figure
    should be what the flood costs the gateway, not what the attacker's own loop costs the
    shared machine (it still sends hundreds of requests a second)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.support.flood_attacker",
        url,
        str(CONNECTIONS),
        str(flood_s),
        str(start),
        str(SLICE_S),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        preexec_fn=lambda: os.nice(10),
    )
    out, _ = await asyncio.wait_for(proc.communicate(), start - time.monotonic() + 2 * flood_s + 30)
    assert proc.returncode == 0, f"the attacker exited {proc.returncode}"
    return orjson.loads(out.strip().splitlines()[-1])


async def refusals(url: str) -> dict[str, float]:
    """The gateway's opsmantik_gateway_auth_refused_total by reason."""
    async with aiohttp.ClientSession() as http, http.get(url + "/metrics") as r:
        text = await r.text()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("opsmantik_gateway_auth_refused_total{"):
            reason = line.split('reason="', 1)[1].split('"', 1)[0]
            out[reason] = float(line.rsplit(" ", 1)[1])
    return out


async def flood(url: str, key: str, flood_s: float, tag: str) -> Flood:
    """`flood_s` seconds of flood slices and as many of pauses, the site's load through both.
    Warm the site's key first (legit_load for a second): its first lookup is not the flood's."""
    start = time.monotonic() + 1.5  # the attacker's interpreter starts meanwhile
    attacker, sent = await asyncio.gather(
        attack(url, flood_s, start), legit_load(url, key, 2 * flood_s, tag, start)
    )
    return Flood(attacker, await refusals(url), sent, start)
