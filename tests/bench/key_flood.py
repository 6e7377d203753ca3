"""Bench rows: what a forged-key flood costs a site's latency on the same gateway
(docs/reliability.md "Forged-key flood"; the flood: tests/support/key_flood.py).

32 connections of fresh forged keys from a process at nice 10, in 1 s slices with 1 s pauses,
while one site sends 100 single-event requests a second, open loop; the site's requests in the
pauses are the baseline of the same round. Goal: the flooded p95 ≤ 2× the unflooded p95 (5 ms
floor), as the median of the rounds' ratios (3 rounds of 10 s of flooding; --quick 1 of 4 s;
--smoke 1 of 2 s). The gateway alone on its topic, broker up (the outbox path under a flood
is test_key_flood's broker-down round).
"""

from __future__ import annotations

import asyncio
import statistics
from typing import TYPE_CHECKING

from tests.bench.env import SiteKey
from tests.bench.stats import Row
from tests.support.key_flood import Flood, flood, legit_load

if TYPE_CHECKING:
    from tests.bench.runner import Bench

RATIO_GOAL = 2.0


async def _rounds(url: str, key: str, rounds: int, flood_s: float) -> list[Flood]:
    await legit_load(url, key, 1.0, "kf-warm")  # the key cached
    return [await flood(url, key, flood_s, f"kf{i}") for i in range(rounds)]


def run(bench: Bench, site: SiteKey) -> None:
    from tests.bench.runner import GATEWAY_PORT

    rounds = bench.plan.size(3, 1, 1)
    flood_s = float(bench.plan.size(10, 4, 2))
    bench.say(f"scenario: forged-key flood beside one site, {rounds} × {flood_s:.0f} s")
    gw = bench._gateway(bench.env.topic("a"))
    try:
        floods = asyncio.run(_rounds(f"http://127.0.0.1:{GATEWAY_PORT}", site.api_key, rounds, flood_s))
    finally:
        bench.release(gw)
    p95s = [f.p95s_s() for f in floods]
    ratios = [f.p95_ratio() for f in floods]
    base = Row("key flood: site unflooded", "baseline", p95_ms=statistics.median(b for b, _ in p95s) * 1000)
    row = Row(
        "key flood: site flooded",
        "scenario",
        p95_ms=statistics.median(f for _, f in p95s) * 1000,
        baseline=base.name,
        ratio=statistics.median(ratios),
        goal=f"p95 ≤ {RATIO_GOAL:g}× unflooded (median of {rounds} rounds)",
    )
    row.goal_met = row.ratio is not None and row.ratio <= RATIO_GOAL
    attacked = sum(sum(f.attacker["statuses"].values()) for f in floods)
    non200 = sum(s.status != 200 for f in floods for s in f.sent)
    row.notes.append(
        f"rounds' ratios {', '.join(f'{r:.2f}' for r in ratios)}; the attacker got "
        f"{attacked / (rounds * flood_s):,.0f} answers/s of flooding; the site {non200} non-200"
    )
    bench.rows += [base, row]
    bench.say(f"  p95 ratio {row.ratio:.2f} (rounds {', '.join(f'{r:.2f}' for r in ratios)})")
