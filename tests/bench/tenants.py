"""Bench rows: the gateway, the worker and the commands with 0, 10,000 and 100,000 sites in the
database (issue 28).

Each level adds idle sites (a hard cap, one event this month and one last month, each with its
ledger row behind its invoice row, so reconcile finds no drift; the invoice rows last updated at
the month's start: idle since; no traffic). Then, with no service running, `reconcile` of the month
(this checkout's and `--before`'s CLI; the full comparison, which the worker's incremental passes
then start from), this checkout's `sla-report` of the month and `billing close` of last month
(grace 0; reopened afterwards, so the next level closes it again), in wall seconds, CLI start-up
included. Then, for this checkout and for `--before`'s:

- a fresh gateway: its CPU with no traffic at all (the background refreshes alone, as a share of
  one core), single events from one site with a hard cap paced at 150 requests/s (its p99, against
  the empty database's), one GET /status;
- a fresh worker (the periodic reconcile every RECONCILE_S, not the 300 s default, so the idle
  window holds passes), once its first pass is done (its drift gauge of the month exported) and the
  gateway phase's events ledgered: its CPU and Postgres' with no traffic, then its CPU per event
  under single events paced at 150 requests/s.

`--quick` stops at 10,000 sites; `--smoke` measures 100 only (1 s windows, the kept worker of
end-to-end's topic, the commands at once).
"""

from __future__ import annotations

import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

from tests.bench.env import OPSMANTIK, BenchError, SiteKey, wait_until
from tests.bench.procs import CpuMeter, run_child
from tests.bench.stats import Row, ratio
from tests.bench.wrk import LoadResult
from tests.support.process import Process, free_port

if TYPE_CHECKING:
    from tests.bench.runner import Bench

PACED_RATE = 150.0  # requests/s of the many-tenant report
IDLE_GOAL = 0.02  # of one core
P99_GOAL = 1.2  # × the empty database's p99
RECONCILE_S = 10.0  # the measured workers' reconcile interval (the default is 300 s)


def _levels(bench: Bench) -> list[int]:
    plan = bench.plan
    return [100] if plan.smoke else [0, 10_000] if plan.quick else [0, 10_000, 100_000]


def _timed_cli(
    bench: Bench, *args: str, ok: tuple[int, ...] = (0,), timeout_s: float = 600, **env: str
) -> float:
    t0 = time.monotonic()
    run = run_child([*OPSMANTIK, *args], bench.env.env(bench.env.topic("a"), **env), timeout_s)
    if run.returncode not in ok:
        raise BenchError(f"opsmantik {' '.join(args)} failed ({run.returncode}):\n{run.stderr[-2000:]}")
    return time.monotonic() - t0


def tenants(bench: Bench) -> None:
    sender = bench.site("tenants")
    if bench.env.query("set_hard_cap", sender.site_id, 10**12) is None:
        raise BenchError("the tenants sender site is missing")
    if not bench.plan.smoke:  # the scenario's topics, made as the product makes them (migrate)
        bench.env.cli("migrate", topic=bench.env.topic("t"))
    month = datetime.now(UTC).date().replace(day=1)
    last = (month - timedelta(days=1)).replace(day=1)
    present, empty_p99 = 0, dict[str, float]()
    for level in _levels(bench):
        if level > present:
            t0 = time.monotonic()
            bench.env.query("add_idle_sites", f"bench-idle-{present}-", level - present, month)
            bench.say(f"  added {level - present:,} idle sites in {time.monotonic() - t0:.1f} s")
            present = level
        # First the commands (no service running): `reconcile` compares every site, and makes that
        # the kept figures the worker's incremental passes start from.
        _commands(bench, level, month, last)
        # `--before PATH`: that checkout's gateway, worker and reconcile at the same level, same run
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

    smoke = bench.plan.smoke
    idle_s = 1.0 if smoke else 10.0 if bench.plan.quick else 30.0
    # --smoke: the gateway and worker of end-to-end's topic, left up (Bench.kept); else a topic of
    # this scenario's own, so the worker starts on this scenario's events only
    topic = bench.env.topic("b" if smoke else "t")
    bench.say(f"scenario: gateway and worker{label} with {level:,} sites in the database")
    before = _counts(bench, sender)
    gw = bench._gateway(topic, **env)
    try:
        warm = bench._load(GATEWAY_PORT, sender.api_key, 0, f"ten-warm-{level}{label[2:3]}", 1, [], 4, 50)
        idle = CpuMeter([gw.pid]).start()
        time.sleep(idle_s)
        idle.stop()
        core = idle.used / idle.wall
        ours, engines = CpuMeter([gw.pid]), CpuMeter(bench.env.engine_pids())
        r = bench._load(
            GATEWAY_PORT,
            sender.api_key,
            0,
            f"ten-{level}{label[2:3]}",
            bench.plan.seconds,
            [ours, engines],
            connections=8,
            rate=PACED_RATE,
        )
        t0 = time.monotonic()
        with urllib.request.urlopen(f"http://127.0.0.1:{GATEWAY_PORT}/status", timeout=30) as page:
            page.read()
        status_ms = (time.monotonic() - t0) * 1000
        _gateway_row(bench, level, label, r, ours, engines, core, idle.wall, status_ms, empty_p99)
        _worker(bench, sender, level, label, env, topic, month, before, warm.events + r.events)
    finally:
        bench.release(gw)


def _gateway_row(
    bench: Bench,
    level: int,
    label: str,
    r: LoadResult,
    ours: CpuMeter,
    engines: CpuMeter,
    core: float,
    idle_wall: float,
    status_ms: float,
    empty_p99: dict[str, float],
) -> None:
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
        f"idle gateway {core:.2%} of a core over {idle_wall:.0f} s; GET /status {status_ms:.0f} ms; "
        f"vs baseline = p99 ÷ the empty database's ({ratio(r.p99_ms, base) or 0:.2f}×)"
    )
    bench.say(
        f"  {level:,} sites{label}: idle gateway {core:.2%} of a core, p99 {r.p99_ms:.1f} ms, "
        f"/status {status_ms:.0f} ms"
    )


def _scrape(port: int) -> str:
    # 60 s: the worker before issue 28 renders a series per site and month (400,000 at 100,000
    # sites: > 5 s, the 2026-12-07 run's timeout, which it never answered within)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=60) as page:
            return page.read().decode()
    except OSError:
        return ""


def _worker(
    bench: Bench,
    sender: SiteKey,
    level: int,
    label: str,
    env: dict[str, str],
    topic: str,
    month: date,
    before: tuple[int, int],
    acknowledged: int,
) -> None:
    """A worker's idle CPU (periodic reconcile every RECONCILE_S) and its CPU per event."""
    from tests.bench.runner import GATEWAY_PORT

    smoke = bench.plan.smoke
    idle_s = 1.0 if smoke else 10.0 if bench.plan.quick else 30.0
    if smoke:  # end-to-end's worker (kept), its metrics on the bench's port, the default interval
        port, worker = bench.env.metrics_ports[0], bench._service("worker", topic)
    else:
        port = free_port()
        worker = bench._service(
            "worker",
            topic,
            **{
                **env,
                "OPSMANTIK_WORKER_METRICS_PORT": str(port),
                "OPSMANTIK_RECONCILE_INTERVAL_S": f"{RECONCILE_S:g}",
            },
        )
    try:
        t0 = time.monotonic()
        gauge = f'opsmantik_billing_drifting_sites{{month="{month:%Y-%m}"}}'
        ok, _ = wait_until(lambda: gauge in _scrape(port), 600, 2.0)
        first_pass_s = time.monotonic() - t0
        if not ok:
            raise BenchError(f"worker{label}: no reconcile pass within 600 s:\n{worker.tail()}")
        _ledgered(bench, sender, before, acknowledged, worker)  # the gateway phase's events
        time.sleep(0 if smoke else 2)
        pg_pid = bench.env.stack.pg_pid()
        mine, pg = CpuMeter([worker.pid]).start(), CpuMeter([pg_pid] if pg_pid else []).start()
        time.sleep(idle_s)
        mine.stop()
        pg.stop()
        idle_core, pg_core = mine.used / mine.wall, pg.used / pg.wall
        start = _counts(bench, sender)
        busy = CpuMeter([worker.pid]).start()
        t1 = time.monotonic()
        r = bench._load(
            GATEWAY_PORT,
            sender.api_key,
            0,
            f"ten-w-{level}{label[2:3]}",
            bench.plan.seconds,
            [],
            connections=8,
            rate=PACED_RATE,
        )
        shown = _ledgered(bench, sender, start, r.events, worker)
        busy.stop()
        t_all = time.monotonic() - t1
    finally:
        bench.release(worker)
    new = max(1, shown - start[0])
    us = busy.used / new * 1e6
    row = Row(
        f"{level:,} sites: worker{label}, 1 event/request @ {PACED_RATE:.0f} req/s",
        "scenario",
        events_per_s=new / max(t_all, 1e-3),
        cpu_us_per_event=us,
        goal=f"idle ≤ {IDLE_GOAL:.0%} of a core",
        goal_met=idle_core <= IDLE_GOAL,
    )
    interval = "the default interval (300 s)" if smoke else f"every {RECONCILE_S:g} s"
    row.notes.append(
        f"idle worker {idle_core:.2%} of a core, Postgres (all its clients) {pg_core:.2%}, over "
        f"{mine.wall:.0f} s with the periodic reconcile {interval}; its first pass (from start-up) "
        f"done {first_pass_s:.1f} s after start; CPU per event = the worker's utime + stime from the "
        f"first request until the invoice showed all {new:,} events ({t_all:.1f} s) ÷ events"
    )
    bench.rows.append(row)
    bench.say(
        f"  {level:,} sites{label}: idle worker {idle_core:.2%} of a core (Postgres {pg_core:.2%}), "
        f"first pass after {first_pass_s:.1f} s, {us:.0f} µs of worker CPU per event"
    )


def _counts(bench: Bench, sender: SiteKey) -> tuple[int, int]:
    """The sender's invoice events and outbox rows."""
    return bench.env.value("usage_events", sender.site_id), bench.env.value("outbox_count", sender.site_id)


def _ledgered(bench: Bench, sender: SiteKey, since: tuple[int, int], acked: int, worker: Process) -> int:
    """Wait until the sender's invoice shows the `acked` events acknowledged since `since` (less those
    the gateway answered from the outbox meanwhile: no relay runs here); returns what it shows."""
    usage0, outbox0 = since

    def done() -> bool:
        outboxed = bench.env.value("outbox_count", sender.site_id) - outbox0
        return bench.env.value("usage_events", sender.site_id) >= usage0 + acked - outboxed

    ok, _ = wait_until(done, 60 if bench.plan.quick else 180, 0.1)
    if not ok:
        raise BenchError(f"the worker did not ledger the sender's events:\n{worker.tail()}")
    return bench.env.value("usage_events", sender.site_id)


def _commands(bench: Bench, level: int, month: date, last: date) -> None:
    """`reconcile` (this checkout's and --before's), `sla-report` of the month, `billing close` of last
    month (grace 0, then reopened: each level closes it again). exit 1 = drift found or a credit owed
    (e.g. the broker-down scenario's minute counted against the SLO)."""
    times: dict[str, float] = {}
    jobs: list[tuple[str, tuple[str, ...], dict[str, str], float]] = [
        ("reconcile", ("reconcile", "--month", f"{month:%Y-%m}", "--json"), {}, 600),
        ("sla-report", ("sla-report", "--month", f"{month:%Y-%m}", "--json"), {}, 600),
    ]
    if bench.before:
        env = {"PYTHONPATH": f"{bench.before}/services"}
        jobs.insert(1, ("reconcile (before)", ("reconcile", "--month", f"{month:%Y-%m}", "--json"), env, 600))
    close = ("billing", "close", "--month", f"{last:%Y-%m}", "--json")
    grace = {"OPSMANTIK_BILLING_CLOSE_GRACE_DAYS": "0"}
    jobs.append(("billing close", close, grace, 3600))
    # --smoke runs them at once (its figures mean nothing; CLI start-ups were most of its time)
    with ThreadPoolExecutor(len(jobs) if bench.plan.smoke else 1) as pool:
        done = pool.map(lambda j: (j[0], _timed_cli(bench, *j[1], ok=(0, 1), timeout_s=j[3], **j[2])), jobs)
        times.update(done)
    statements = bench.env.value("statements_of", last)
    bench.env.query("reopen_month", last)
    row = Row(f"{level:,} sites: commands", "scenario")
    row.notes.append(
        ", ".join(f"{name} {s:.1f} s" for name, s in times.items())
        + f" (wall, CLI start-up included; reconcile and sla-report of {month:%Y-%m}, billing close of "
        f"{last:%Y-%m}: {statements:,} statements)"
    )
    bench.rows.append(row)
    bench.say(f"  {level:,} sites: " + ", ".join(f"{n} {s:.1f} s" for n, s in times.items()))
