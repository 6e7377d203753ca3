"""Bench rows: the gateway with 0, 10,000 and 100,000 sites in the database (issue 28).

Each level adds idle sites (a hard cap, usage rows this month and last, no traffic) to the
bench's database, then starts a fresh gateway and measures: its CPU with no traffic at all (the
background refreshes alone, as a share of one core), single events from one site with a hard cap
at a paced 150 requests/s (its p99, against the empty database's), one GET /status, and the
`reconcile` and `sla-report` commands of this month (wall seconds). `--quick` stops at 10,000 sites;
`--smoke` measures 100 only (1 s idle).
"""

from __future__ import annotations

import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING

from tests.bench.env import OPSMANTIK, BenchError, SiteKey
from tests.bench.procs import CpuMeter, run_child
from tests.bench.stats import ratio

if TYPE_CHECKING:
    from tests.bench.runner import Bench

PACED_RATE = 150.0  # requests/s of the many-tenant report
IDLE_GOAL = 0.02  # of one core
P99_GOAL = 1.2  # × the empty database's p99


def _levels(bench: Bench) -> list[int]:
    plan = bench.plan
    return [100] if plan.smoke else [0, 10_000] if plan.quick else [0, 10_000, 100_000]


def _timed_cli(bench: Bench, *args: str, ok: tuple[int, ...] = (0,)) -> float:
    t0 = time.monotonic()
    run = run_child([*OPSMANTIK, *args], bench.env.env(bench.env.topic("a")), 600)
    if run.returncode not in ok:
        raise BenchError(f"opsmantik {' '.join(args)} failed ({run.returncode}):\n{run.stderr[-2000:]}")
    return time.monotonic() - t0


def tenants(bench: Bench) -> None:
    sender = bench.site("tenants")
    if bench.env.query("set_hard_cap", sender.site_id, 10**12) is None:
        raise BenchError("the tenants sender site is missing")
    month = datetime.now(UTC).date().replace(day=1)
    present, empty_p99 = 0, dict[str, float]()
    for level in _levels(bench):
        if level > present:
            t0 = time.monotonic()
            bench.env.query("add_idle_sites", f"bench-idle-{present}-", level - present, month)
            bench.say(f"  added {level - present:,} idle sites in {time.monotonic() - t0:.1f} s")
            present = level
        # `--before PATH`: that checkout's gateway at the same level, in the same run
        for label, env in [("", {}), *([(" (before)", bench.before_env())] if bench.before else [])]:
            _level(bench, sender, level, label, env, month, empty_p99)


def _level(
    bench: Bench,
    sender: SiteKey,
    level: int,
    label: str,
    env: dict[str, str],
    month: date,
    empty_p99: dict[str, float],
) -> None:
    from tests.bench.runner import GATEWAY_PORT

    idle_s = 1.0 if bench.plan.smoke else 10.0 if bench.plan.quick else 30.0
    bench.say(f"scenario: gateway{label} with {level:,} sites in the database")
    # --smoke: the gateway end-to-end and ledger-growth left up (Bench.kept); the topic plays no part
    gw = bench._gateway(bench.env.topic("b" if bench.plan.smoke else "a"), **env)
    try:
        bench._load(GATEWAY_PORT, sender.api_key, 0, f"ten-warm-{level}", 1, [], connections=4, rate=50)
        idle = CpuMeter([gw.pid]).start()
        time.sleep(idle_s)
        idle.stop()
        core = idle.used / idle.wall
        ours, engines = CpuMeter([gw.pid]), CpuMeter(bench.env.engine_pids())
        r = bench._load(
            GATEWAY_PORT,
            sender.api_key,
            0,
            f"ten-{level}",
            bench.plan.seconds,
            [ours, engines],
            connections=8,
            rate=PACED_RATE,
        )
        t0 = time.monotonic()
        with urllib.request.urlopen(f"http://127.0.0.1:{GATEWAY_PORT}/status", timeout=30) as page:
            page.read()
        status_ms = (time.monotonic() - t0) * 1000
    finally:
        bench.release(gw)
    # exit 1 = drift found (the idle sites' usage rows have no ledger rows behind them), or a
    # credit owed (e.g. the broker-down scenario's minute counted against the SLO)
    commands = (
        ("reconcile", "--month", f"{month:%Y-%m}", "--json"),
        ("sla-report", "--month", f"{month:%Y-%m}", "--json"),
    )
    # --smoke runs the two at once (its figures mean nothing; two CLI start-ups were 5-14 s of it)
    with ThreadPoolExecutor(2 if bench.plan.smoke else 1) as pool:
        reconcile_s, sla_s = pool.map(lambda args: _timed_cli(bench, *args, ok=(0, 1)), commands)
    if level == 0:
        empty_p99[label] = r.p99_ms
    base = empty_p99.get(label)
    row = bench._http_row(
        f"{level:,} sites: gateway{label}, 1 event/request @ {PACED_RATE:.0f} req/s",
        "scenario",
        r,
        ours,
        engines,
        f"0 sites: gateway{label}" if level else None,
        base if level else None,
        r.p99_ms if level else None,
    )
    row.goal = f"idle ≤ {IDLE_GOAL:.0%} of a core" + (f", p99 ≤ {P99_GOAL}× 0 sites'" if level else "")
    row.goal_met = core <= IDLE_GOAL and (
        level == 0 or (base is not None and r.p99_ms <= P99_GOAL * max(base, 1.0))
    )
    row.notes.append(
        f"idle gateway {core:.2%} of a core over {idle.wall:.0f} s; GET /status {status_ms:.0f} ms; "
        f"reconcile {reconcile_s:.1f} s, sla-report {sla_s:.1f} s (wall, CLI start-up included); "
        f"vs baseline = p99 ÷ the empty database's ({ratio(r.p99_ms, base) or 0:.2f}×)"
    )
    bench.say(
        f"  {level:,} sites{label}: idle {core:.2%} of a core, p99 {r.p99_ms:.1f} ms, "
        f"/status {status_ms:.0f} ms, reconcile {reconcile_s:.1f} s, sla-report {sla_s:.1f} s"
    )
