"""The meters' scenarios (issue 26, docs/meters.md; rows in docs/benchmarks.md "Meters"):

- `meters-worker-cost`: gateway + worker end to end, 100-event batches paced at WORKER_COST_RATE
  with properties the meters read (wrk WRK_PROPS=meters), alternately with no user meter (the two
  built-ins always count) and with the 5 meters of METERS defined, same worker, same run; the
  worker's CPU per event in each and their ratio (goal ≤ 1.15).
- `meters-freshness`: the 5 meters defined, 20,000 ev/s offered (100-event batches, paced) while a
  probe accepts one event of its own site at a time and polls GET /api/v1/meters/events/query until
  the meter counts it: accept → visible, p50/p99 (goal p99 < 1 s); also the ledger's own freshness
  over every event of the run (the meters are written in the ledger's transaction).
- `meters-query`: a site-month of 10M events written straight into meter_buckets and
  meter_unique_values as the worker would write them (SQL generate_series, one statement per day:
  minutes instead of pushing 10M events through), a SUM meter grouped by 100 values and a
  UNIQUE_COUNT meter; each query shape timed through the HTTP API (goal p99 < 100 ms).
- `meters-lookup`: GET /api/v1/events/{id} on a ledger of LOOKUP rows (default 50M; env
  OPSMANTIK_BENCH_LOOKUP_ROWS), loaded by INSERT … SELECT generate_series one month partition at a
  time (goal p99 < 10 ms). Only with `--only meters-lookup` (runner.ON_REQUEST), or --smoke.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import os
import random
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote, urlencode

import asyncpg
import orjson
from opsmantik.errors import NotFound
from opsmantik.meters import definitions, rollup
from opsmantik.meters import query as meter_query

from tests.bench.env import BenchError, SiteKey, wait_until
from tests.bench.procs import CpuMeter
from tests.bench.stats import Row, percentile, ratio
from tests.bench.wrk import run_wrk

if TYPE_CHECKING:
    from tests.bench.runner import Bench

T = TypeVar("T")

# The 5 meters a user would define over the bench's page_view events (load.lua WRK_PROPS=meters),
# as tests/bench/meter_bytes.py: (slug, aggregation, value property, group-by).
METERS: list[tuple[str, str, str | None, dict[str, str]]] = [
    ("tokens", "SUM", "$.tokens", {"model": "$.model"}),  # 100 values
    ("calls", "COUNT", None, {"region": "$.region"}),  # 5 values
    ("users", "UNIQUE_COUNT", "$.user", {}),  # 20,000 values
    ("slowest", "MAX", "$.ms", {}),
    ("last", "LATEST", "$.ms", {}),
]
WORKER_COST_RATE = 10_000  # ev/s: below what one worker keeps up with, so both phases batch alike
# ev/s offered: the freshness goal; OPSMANTIK_BENCH_METER_FRESH_RATE measures another rate
FRESH_RATE = int(os.environ.get("OPSMANTIK_BENCH_METER_FRESH_RATE") or 20_000)
SMOKE_RATE = 2_000  # --smoke: both load scenarios at this rate (seconds of drain, not tens)


def _rate(bench: Bench, rate: int) -> int:
    return SMOKE_RATE if bench.plan.smoke else rate


# ------------------------------------------------------------------ helpers


def _run(bench: Bench, coro: Any) -> Any:
    """A coroutine on the bench's own connection loop (BenchEnv._connection)."""
    bench.env._connection()
    assert bench.env._loop is not None
    return bench.env._loop.run_until_complete(coro)


def _conn(bench: Bench) -> asyncpg.Connection:
    return bench.env._connection()


def define_meters(bench: Bench) -> None:
    conn = _conn(bench)
    for slug, agg, vp, gb in METERS:
        _run(bench, definitions.create(conn, slug, "page_view", agg, vp, gb))


def drop_meters(bench: Bench) -> None:
    conn = _conn(bench)
    for slug, *_ in METERS:
        with contextlib.suppress(NotFound):  # not defined (a failed create): nothing to drop
            _run(bench, definitions.delete(conn, slug))


class Http:
    """One keep-alive connection to the gateway; each call timed from send to the body read."""

    def __init__(self, port: int, key: str) -> None:
        self.port, self.key = port, key
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes, float]:
        headers = {"Authorization": f"Bearer {self.key}"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        for attempt in (0, 1):
            t0 = time.perf_counter()
            try:
                self.conn.request(method, path, body=body, headers=headers)
                resp = self.conn.getresponse()
                data = resp.read()
                return resp.status, data, (time.perf_counter() - t0) * 1000
            except (http.client.HTTPException, ConnectionError):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.conn.close()


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _own_metrics(bench: Bench, service: str = "WORKER") -> dict[str, str]:
    """A worker or relay of the scenario's own serves its metrics on an ephemeral port (the bench's
    fixed one may still be held by one stopping); --smoke reuses the kept ones as they are."""
    return {} if bench.plan.smoke else {f"OPSMANTIK_{service}_METRICS_PORT": "0"}


def _warm(bench: Bench, probe: SiteKey, worker_tail: Callable[[], str], port: int = 0) -> None:
    """A few events of the probe site until the worker has ledgered one (it has joined its group)."""
    from tests.bench.runner import GATEWAY_PORT

    if bench.env.value("usage_events", probe.site_id) > 0:
        return
    run_wrk(
        f"http://127.0.0.1:{port or GATEWAY_PORT}",
        duration_s=1,
        connections=2,
        batch=100,
        prefix=f"{bench.env.tag}-mwarm",
        occurred_at=bench.occurred_at,
        api_key=probe.api_key,
        rate=20,
    )
    ok, _ = wait_until(lambda: bench.env.value("usage_events", probe.site_id) > 0, 180, 0.2)
    if not ok:
        raise BenchError(f"worker ledgered nothing within 180 s:\n{worker_tail()}")


# ------------------------------------------------------------------ meters-worker-cost


def worker_cost(bench: Bench) -> None:
    """With `--before CHECKOUT`, a worker and gateway of that checkout (their own topic) run the
    same phases too, interleaved with this checkout's: rows "(before)"."""
    from tests.bench.runner import BEFORE_GATEWAY_PORT, GATEWAY_PORT

    env, plan = bench.env, bench.plan
    bench.say(
        f"scenario: meters worker cost (0 vs 5 user meters, {_rate(bench, WORKER_COST_RATE):,} ev/s paced)"
    )
    # --smoke: end-to-end's topic, whose worker and gateway are still up (Bench.kept)
    topic = env.topic("b" if plan.smoke else "mw")
    sides = [
        (
            "",
            topic,
            GATEWAY_PORT,
            bench._service("worker", topic, **_own_metrics(bench)),
            bench._gateway(topic),
        )
    ]
    # A relay per topic: a request answered from the outbox (the gateway's delivery deadline missed
    # on a loaded machine) reaches the ledger through it, as in production.
    relays = [bench._service("relay", topic, **_own_metrics(bench, "RELAY"))]
    if bench.before:
        btopic = env.topic("mwb")
        bworker = bench._service("worker", btopic, **bench.before_env())
        bgw = bench._gateway(btopic, BEFORE_GATEWAY_PORT, **bench.before_env())
        sides.insert(0, (" (before)", btopic, BEFORE_GATEWAY_PORT, bworker, bgw))
        relays.append(bench._service("relay", btopic, **_own_metrics(bench, "RELAY")))
    # (label, user meters) -> [(worker CPU s, events, engines CPU s, seconds)]
    runs: dict[tuple[str, int], list[tuple[float, int, float, float]]] = {}
    try:
        for label, _, port, worker, _ in sides:
            _warm(bench, bench.site(f"meters-warm{label[2:8]}"), worker.tail, port)
        drop_meters(bench)
        rounds = 1 if plan.smoke else 2
        for i in range(rounds):
            for n in (0, 5):
                if n:
                    define_meters(bench)
                for label, _, port, worker, _ in sides:
                    site = bench.site(f"meters-cost-{i}-{n}{label[2:8]}")
                    run = _cost_run(bench, worker.pid, port, site, f"mc{i}{n}{label[2:3]}")
                    runs.setdefault((label, n), []).append(run)
                    bench.say(
                        f"  {n} user meters{label}: {run[1]:,} events in {run[3]:.1f} s, worker "
                        f"{run[0] / max(1, run[1]) * 1e6:.1f} µs/ev, engines "
                        f"{run[2] / max(1, run[1]) * 1e6:.1f} µs/ev"
                    )
                if n:
                    drop_meters(bench)
    finally:
        drop_meters(bench)
        for _, _, _, worker, gw in sides:
            bench.release(worker)
            bench.release(gw)
        for relay in relays:
            bench.release(relay)
    for label, *_ in sides:
        _cost_rows(bench, label, runs[(label, 0)], runs[(label, 5)])


def _cost_run(
    bench: Bench, pid: int, port: int, site: SiteKey, prefix: str
) -> tuple[float, int, float, float]:
    env, plan = bench.env, bench.plan
    worker_cpu, engines = CpuMeter([pid]), CpuMeter(env.engine_pids())
    worker_cpu.start()
    engines.start()
    t0 = time.monotonic()
    r = run_wrk(
        f"http://127.0.0.1:{port}",
        duration_s=plan.seconds,
        connections=64,
        batch=100,
        prefix=f"{env.tag}-{prefix}",
        occurred_at=bench.occurred_at,
        api_key=site.api_key,
        rate=_rate(bench, WORKER_COST_RATE) / 100,
        props="meters",
    )
    ok, t_all = wait_until(
        lambda: env.value("usage_events", site.site_id) >= r.events - env.value("outbox_count", site.site_id),
        60 if plan.quick else 180,
        0.05,
    )
    worker_cpu.stop()
    engines.stop()
    shown = env.value("usage_events", site.site_id)
    if not ok:
        raise BenchError(f"{prefix}: the invoice showed {shown:,} of {r.events:,} events")
    return worker_cpu.used, shown, engines.used, t_all - t0


def _cost_rows(
    bench: Bench,
    label: str,
    none: list[tuple[float, int, float, float]],
    five: list[tuple[float, int, float, float]],
) -> None:
    def per_event(runs: list[tuple[float, int, float, float]]) -> tuple[float, float, int, float]:
        events = max(1, sum(x[1] for x in runs))
        return (
            sum(x[0] for x in runs) / events * 1e6,
            sum(x[2] for x in runs) / events * 1e6,
            events,
            events / sum(x[3] for x in runs),
        )

    def each(runs: list[tuple[float, int, float, float]]) -> str:
        return ", ".join(f"{c / max(1, e) * 1e6:.1f}" for c, e, _, _ in runs)

    base_us, base_eng, base_n, base_rate = per_event(none)
    with_us, with_eng, with_n, with_rate = per_event(five)
    base = Row(
        f"meters worker cost: 0 user meters{label}",
        "baseline",
        events_per_s=base_rate,
        cpu_us_per_event=base_us,
        engine_cpu_us_per_event=base_eng,
    )
    base.notes.append(
        f"worker process tree utime + stime ÷ the {base_n:,} events the invoice showed, over {len(none)} "
        f"run(s) of {bench.plan.seconds} s at {_rate(bench, WORKER_COST_RATE):,} ev/s offered (100-event "
        "batches, WRK_PROPS=meters); the built-in events and quantity meters count as always; per run "
        f"{each(none)} µs/ev"
    )
    row = Row(
        f"meters worker cost: 5 meters{label}",
        "scenario",
        events_per_s=with_rate,
        cpu_us_per_event=with_us,
        engine_cpu_us_per_event=with_eng,
        baseline=base.name,
        ratio=ratio(with_us, base_us),
        goal="" if label else "≤ 1.15× the worker CPU/ev with 0 user meters",
    )
    if not label:
        row.goal_met = row.ratio is not None and row.ratio <= 1.15
    else:
        row.notes.append(f"the gateway and worker of {bench.before} (PYTHONPATH), their own topic")
    meters = "; ".join(
        f"{s} {a}{'(' + v + ')' if v else ''}{' by ' + ','.join(g) if g else ''}" for s, a, v, g in METERS
    )
    row.notes.append(
        f"5 meters over page_view: {meters}; runs alternate 0/5 meters on one worker; per run {each(five)} "
        f"µs/ev; engines (Kafka + Postgres) {with_eng:.1f} vs {base_eng:.1f} µs/ev"
    )
    bench.rows += [base, row]
    bench.say(
        f"  5 meters ÷ 0{label}: worker CPU ×{row.ratio or 0:.2f} ({with_us:.1f} vs {base_us:.1f} µs/ev)"
    )


# ------------------------------------------------------------------ meters-freshness


class Probe(threading.Thread):
    """One event of its own site at a time: accepted (200), then GET the `events` meter's query
    every POLL_S until it counts the event; the lag from the 200 to the answer that shows it."""

    POLL_S = 0.01
    WAIT_S = 240  # an overloaded worker's backlog can hold an event for minutes: measured, not cut off

    def __init__(self, port: int, site: SiteKey, occurred_at: str, tag: str) -> None:
        super().__init__(daemon=True)
        self.http = Http(port, site.api_key)
        self.occurred_at, self.tag = occurred_at, tag
        start = datetime.fromisoformat(occurred_at).replace(second=0) - timedelta(hours=1)
        self.path = "/api/v1/meters/events/query?" + urlencode({"from": _iso(start)})
        self.stop = threading.Event()
        self.lags_ms: list[float] = []
        self.polls = 0
        self.error = ""

    def count(self) -> int:
        status, body, _ = self.http.request("GET", self.path)
        self.polls += 1
        if status != 200:
            raise BenchError(f"meter query {status}: {body[:300]!r}")
        data = orjson.loads(body)["data"]
        return int(data[0]["value"]) if data else 0

    def run(self) -> None:
        try:
            seen, i = self.count(), 0
            while not self.stop.is_set():
                i += 1
                ev = {
                    "event_id": f"{self.tag}-probe-{i}",
                    "type": "page_view",
                    "occurred_at": self.occurred_at,
                    "quantity": 1,
                }
                status, body, _ = self.http.request("POST", "/api/sync", orjson.dumps(ev))
                accepted = time.perf_counter()
                if status not in (200, 202):
                    raise BenchError(f"probe event {status}: {body[:300]!r}")
                deadline = accepted + self.WAIT_S
                while time.perf_counter() < deadline:
                    if self.count() > seen:
                        self.lags_ms.append((time.perf_counter() - accepted) * 1000)
                        seen += 1
                        break
                    time.sleep(self.POLL_S)
                else:
                    raise BenchError(f"probe event {i} not in the meter after {self.WAIT_S} s")
                self.stop.wait(0.05)
        except Exception as exc:  # noqa: BLE001 - reported by the scenario
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.http.close()


def freshness(bench: Bench) -> None:
    """At 20,000 ev/s offered, with the built-in meters only and then with the 5 meters defined."""
    env, plan = bench.env, bench.plan
    topic = env.topic("b" if plan.smoke else "mf")
    bench.say(
        f"scenario: meters freshness ({_rate(bench, FRESH_RATE):,} ev/s offered, a probe polling a meter)"
    )
    worker = bench._service("worker", topic, **_own_metrics(bench))
    relay = bench._service("relay", topic, **_own_metrics(bench, "RELAY"))  # ledgers outbox answers
    gw = bench._gateway(topic)
    try:
        _warm(bench, bench.site("meters-warm"), worker.tail)
        drop_meters(bench)
        for n in (0, 5):
            if n:
                define_meters(bench)
            _fresh_run(bench, n, [gw.pid, worker.pid])
    finally:
        drop_meters(bench)
        bench.release(worker)
        bench.release(relay)
        bench.release(gw)


def _fresh_run(bench: Bench, meters: int, pids: list[int]) -> None:
    from tests.bench.runner import GATEWAY_PORT

    env, plan = bench.env, bench.plan
    rate = _rate(bench, FRESH_RATE)
    site, probe_site = bench.site(f"meters-fresh-{meters}"), bench.site(f"meters-fresh-probe-{meters}")
    seconds = plan.seconds if plan.quick else 2 * plan.seconds
    ours, engines = CpuMeter(pids), CpuMeter(env.engine_pids())
    ours.start()
    engines.start()
    probe = Probe(GATEWAY_PORT, probe_site, bench.occurred_at, f"{env.tag}-mf{meters}")
    t0 = time.monotonic()
    probe.start()
    try:
        r = run_wrk(
            f"http://127.0.0.1:{GATEWAY_PORT}",
            duration_s=seconds,
            connections=64,
            batch=100,
            prefix=f"{env.tag}-mf{meters}",
            occurred_at=bench.occurred_at,
            api_key=site.api_key,
            rate=rate / 100,
            props="meters",
        )
    finally:
        probe.stop.set()
        probe.join(Probe.WAIT_S + 30)
    ok, t_all = wait_until(
        lambda: env.value("usage_events", site.site_id) >= r.events - env.value("outbox_count", site.site_id),
        60 if plan.quick else 240,
        0.05,
    )
    ours.stop()
    engines.stop()
    if probe.error:
        raise BenchError(f"probe: {probe.error}")
    if not probe.lags_ms:
        raise BenchError("probe: no event measured")
    shown = env.value("usage_events", site.site_id)
    outboxed = env.value("outbox_count", site.site_id)
    ledger = env.query("freshness_ms", site.site_id)
    what = "5 meters" if meters else "built-in meters only"
    row = Row(
        f"meters freshness @ {rate / 1000:g}k ev/s offered, {what}",
        "scenario",
        events_per_s=shown / (t_all - t0),
        requests_per_s=r.requests_per_s,
        p50_ms=r.p50_ms,
        p95_ms=r.p95_ms,
        p99_ms=r.p99_ms,
        cpu_us_per_event=ours.used / max(1, shown) * 1e6,
        engine_cpu_us_per_event=engines.used / max(1, shown) * 1e6,
        fresh_p50_ms=percentile(probe.lags_ms, 50),
        fresh_p99_ms=percentile(probe.lags_ms, 99),
        goal="meter fresh p99 < 1 s at 20k ev/s offered" if rate >= 20_000 else "",
    )
    if row.goal:
        row.goal_met = bool(ok and (row.fresh_p99_ms or 1e9) < 1000 and r.events_per_s >= 0.95 * rate)
    row.notes.append(
        f"fresh = the probe's {len(probe.lags_ms)} events, one at a time, each from its 200 to the first "
        f"GET /api/v1/meters/events/query that counts it (polled every {Probe.POLL_S * 1000:.0f} ms, "
        f"{probe.polls:,} polls; max {max(probe.lags_ms):.0f} ms); "
        + ("5 meters defined (tokens, calls, users, slowest, last)" if meters else "no user meter")
        + ", WRK_PROPS=meters"
    )
    if ledger is not None and ledger["n"]:
        row.notes.append(
            f"every event of the run: ledgered_at − received_at p50 {float(ledger['p50']):.0f} ms, p99 "
            f"{float(ledger['p99']):.0f} ms, max {float(ledger['max']):.0f} ms over {int(ledger['n']):,} "
            "rows (the meters are written in the ledger's transaction)"
        )
    row.notes.append(
        f"{r.events:,} events acknowledged in {r.duration_s:.1f} s ({r.events_per_s:,.0f} ev/s offered and "
        f"accepted); the invoice showed {shown:,} {t_all - t0:.1f} s after the first request"
        + ("" if ok else " (TIMED OUT)")
        + (f"; {outboxed:,} answered from the outbox, not waited for" if outboxed else "")
        + f"; load average {os.getloadavg()[0]:.1f}"
    )
    bench.rows.append(row)
    bench.say(
        f"  {what}: meter freshness p50 {row.fresh_p50_ms or 0:.0f} ms, p99 {row.fresh_p99_ms or 0:.0f} ms "
        f"({len(probe.lags_ms)} probes); {row.events_per_s:,.0f} ev/s end to end"
    )


# ------------------------------------------------------------------ meters-query

# One statement per day: the day's events i in [lo, hi), event i in minute i*MINUTES//N of the month,
# model i % 100, user (i * 7919) % 20000 (distinct within a minute), tokens 1 + (i * 31) % 4000.
_EVENTS = """
SELECT i, $3::timestamptz + make_interval(mins => (i * $5::bigint / $4::bigint)::int) AS t
FROM generate_series($6::bigint, $7::bigint - 1) AS i
"""
_ADD_TOKENS = f"""
INSERT INTO meter_buckets (meter_id, site_id, bucket, billing_month, subject, groups, n, total)
SELECT $1, $2, t, $8::date, '', jsonb_build_object('model', 'model-' || (i % 100)), count(*),
       sum(1 + (i * 31) % 4000)
FROM ({_EVENTS}) e GROUP BY t, i % 100 ORDER BY t, 6
"""
_ADD_USER_BUCKETS = f"""
INSERT INTO meter_buckets (meter_id, site_id, bucket, billing_month, subject, groups, n, total)
SELECT $1, $2, t, $8::date, '', '{{}}'::jsonb, count(*), 0 FROM ({_EVENTS}) e GROUP BY t ORDER BY t
"""
_ADD_USERS = f"""
INSERT INTO meter_unique_values (meter_id, site_id, bucket, billing_month, subject, groups, value)
SELECT DISTINCT $1::uuid, $2::uuid, t, $8::date, '', '{{}}'::jsonb, 'user-' || ((i * 7919) % 20000)
FROM ({_EVENTS}) e ORDER BY 3, 7
"""


async def _fill_month(
    database_url: str,
    meters: dict[str, uuid.UUID],
    site: uuid.UUID,
    month: date,
    n: int,
    say: Callable[[str], None],
) -> dict[str, int]:
    start = datetime(month.year, month.month, 1, tzinfo=UTC)
    end = datetime(month.year + (month.month == 12), month.month % 12 + 1, 1, tzinfo=UTC)
    minutes = int((end - start).total_seconds() // 60)
    days = minutes // 1440
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("SET work_mem = '128MB'")
        t0 = time.monotonic()
        for d in range(days):
            lo, hi = -(-d * 1440 * n // minutes), -(-(d + 1) * 1440 * n // minutes)
            common = (start, n, minutes, lo, hi, month)
            async with conn.transaction():
                await conn.execute(_ADD_TOKENS, meters["tokens"], site, *common)
                await conn.execute(_ADD_USER_BUCKETS, meters["users"], site, *common)
                await conn.execute(_ADD_USERS, meters["users"], site, *common)
                # The day's hour and day rollups, as the worker's statement writes them beside the
                # minutes (meters/rollup.py recomputes them from the minutes: the same rows).
                day0 = start + timedelta(days=d)
                await rollup.refresh(conn, list(meters.values()), site, day0, day0 + timedelta(days=1))
            if d % 10 == 9:
                say(f"  {d + 1} of {days} days written ({time.monotonic() - t0:.0f} s)")
        await conn.execute("VACUUM (ANALYZE) meter_buckets")
        await conn.execute("VACUUM (ANALYZE) meter_unique_values")
        await conn.execute("VACUUM (ANALYZE) meter_rollups")
        await conn.execute("VACUUM (ANALYZE) meter_rollup_values")
        out = {}
        for name, meter_id in meters.items():
            out[f"{name}_buckets"] = await conn.fetchval(
                "SELECT count(*) FROM meter_buckets WHERE meter_id = $1 AND site_id = $2", meter_id, site
            )
        out["users_values"] = await conn.fetchval(
            "SELECT count(*) FROM meter_unique_values WHERE meter_id = $1 AND site_id = $2",
            meters["users"],
            site,
        )
        out["events"] = await conn.fetchval(
            "SELECT sum(n) FROM meter_buckets WHERE meter_id = $1 AND site_id = $2", meters["tokens"], site
        )
        out["rollup_rows"] = await conn.fetchval(
            "SELECT count(*) FROM meter_rollups WHERE meter_id = ANY($1) AND site_id = $2",
            list(meters.values()),
            site,
        )
        out["rollup_values"] = await conn.fetchval(
            "SELECT count(*) FROM meter_rollup_values WHERE meter_id = ANY($1) AND site_id = $2",
            list(meters.values()),
            site,
        )
        out["rollup_bytes"] = await conn.fetchval(
            "SELECT pg_total_relation_size('meter_rollups') + pg_total_relation_size('meter_rollup_values')"
        )
        out["bytes"] = await conn.fetchval(
            "SELECT pg_total_relation_size('meter_buckets') + pg_total_relation_size('meter_unique_values')"
            " + pg_total_relation_size('meter_rollups') + pg_total_relation_size('meter_rollup_values')"
        )
        return out
    finally:
        await conn.close()


def _split(
    bench: Bench, meter: definitions.Meter, params: list[tuple[str, str]], site: uuid.UUID
) -> tuple[float, float]:
    """Where an answer's time goes: meters.query.run (the SQL and the rows) and the JSON, timed
    in this process on the bench's connection (best of 2)."""
    q = meter_query.parse_params(params, meter, operator=False)
    run_ms = json_ms = 1e9
    for _ in range(2):
        t0 = time.perf_counter()
        answer = _run(bench, meter_query.run(_conn(bench), meter, q, [site]))
        t1 = time.perf_counter()
        orjson.dumps(answer.as_dict())
        t2 = time.perf_counter()
        run_ms, json_ms = min(run_ms, (t1 - t0) * 1000), min(json_ms, (t2 - t1) * 1000)
    return run_ms, json_ms


def _explain(bench: Bench, meter: definitions.Meter, params: list[tuple[str, str]], site: uuid.UUID) -> None:
    """The plan of a query shape with its timings (EXPLAIN ANALYZE of query.sql with the arguments
    meters.query.run gives it), in the run's log: where the time goes."""
    q = meter_query.parse_params(params, meter, operator=False)
    assert q.start is not None and q.end is not None
    spans = meter_query._spans(q.start, q.end, q)
    where, args = meter_query.arguments(meter, q, spans, [site], None)
    _run(bench, _conn(bench).execute("SET jit = off"))  # as meters.query.run does
    unique = meter.aggregation == "UNIQUE_COUNT"
    sql = meter_query.Q[meter_query._statement(meter)]
    plan = _run(bench, _conn(bench).fetch("EXPLAIN (ANALYZE, BUFFERS) " + sql, *args))
    bench.say(f"  EXPLAIN ANALYZE, {meter.aggregation} {dict(params).get('windowSize')} windows:")
    for r in plan:
        bench.say("    " + r[0])
    # The check of the rows it would read, run before it (meters/query.py MAX_READ): its cost.
    best = 1e9
    for _ in range(3):
        t0 = time.perf_counter()
        _run(bench, meter_query._refuse_expensive(_conn(bench), q, unique, where))
        best = min(best, (time.perf_counter() - t0) * 1000)
    bench.say(f"  the MAX_READ check before it (a bound from the rollups, the count if over): {best:.1f} ms")


def query(bench: Bench) -> None:
    from tests.bench.runner import GATEWAY_PORT

    env, plan = bench.env, bench.plan
    n = int(os.environ.get("OPSMANTIK_BENCH_METER_EVENTS") or plan.size(10_000_000, 1_000_000, 20_000))
    samples = plan.size(100, 20, 2)
    budget_s = plan.size(60, 15, 5)  # per query shape: fewer samples when each is slow
    topic = env.topic("b" if plan.smoke else "a")
    now = datetime.now(UTC)
    month = (now.replace(day=1) - timedelta(days=1)).date().replace(day=1)  # the month before this one
    slugs = {"tokens": "qtokens", "users": "qusers"}
    bench.say(f"scenario: meters query ({n:,} events in {month:%Y-%m}, written as bucket rows by SQL)")
    conn = _conn(bench)
    meters = {
        "tokens": _run(
            bench,
            definitions.create(conn, slugs["tokens"], "llm_call", "SUM", "$.tokens", {"model": "$.model"}),
        ),
        "users": _run(
            bench, definitions.create(conn, slugs["users"], "llm_call", "UNIQUE_COUNT", "$.user", {})
        ),
    }
    site = bench.site("meters-query")
    gw = bench._gateway(topic)
    client = Http(GATEWAY_PORT, site.api_key)
    try:
        t0 = time.monotonic()
        made = asyncio.run(
            _fill_month(
                env.database_url,
                {k: m.meter_id for k, m in meters.items()},
                site.site_id,
                month,
                n,
                bench.say,
            )
        )
        fill_s = time.monotonic() - t0
        bench.say(f"  written in {fill_s:.0f} s: {made}")
        if made["events"] != n:
            raise BenchError(f"the tokens meter holds {made['events']} events, not {n}")
        m0 = datetime(month.year, month.month, 1, tzinfo=UTC)
        m1 = datetime(month.year + (month.month == 12), month.month % 12 + 1, 1, tzinfo=UTC)
        d0 = m0 + timedelta(days=14)
        month_q = {"from": _iso(m0), "to": _iso(m1)}
        day_q = {"from": _iso(d0), "to": _iso(d0 + timedelta(days=1))}
        shapes: list[tuple[str, str, list[tuple[str, str]]]] = [
            ("SUM, DAY windows, month", "tokens", [*month_q.items(), ("windowSize", "DAY")]),
            (
                "SUM, DAY windows, month, groupBy model (100)",
                "tokens",
                [*month_q.items(), ("windowSize", "DAY"), ("groupBy", "model")],
            ),
            ("SUM, MINUTE windows, one day", "tokens", [*day_q.items(), ("windowSize", "MINUTE")]),
            (
                "SUM, MINUTE windows, one day, filterGroupBy model",
                "tokens",
                [*day_q.items(), ("windowSize", "MINUTE"), ("filterGroupBy[model]", "model-7")],
            ),
            (
                "SUM, MINUTE windows, one day, groupBy model (100)",
                "tokens",
                [*day_q.items(), ("windowSize", "MINUTE"), ("groupBy", "model")],
            ),
            (
                "SUM, HOUR windows, one day, groupBy model (100)",
                "tokens",
                [*day_q.items(), ("windowSize", "HOUR"), ("groupBy", "model")],
            ),
            ("SUM, whole month, groupBy model (100)", "tokens", [*month_q.items(), ("groupBy", "model")]),
            ("UNIQUE_COUNT, DAY windows, month", "users", [*month_q.items(), ("windowSize", "DAY")]),
            ("UNIQUE_COUNT, whole month", "users", list(month_q.items())),
            ("UNIQUE_COUNT, MINUTE windows, one day", "users", [*day_q.items(), ("windowSize", "MINUTE")]),
        ]
        if plan.smoke:
            shapes = shapes[:1] + shapes[7:8]
        for label, meter, params in shapes:
            path = f"/api/v1/meters/{slugs[meter]}/query?" + urlencode(params, quote_via=quote)
            status, body, first_ms = client.request("GET", path)  # warm-up, not counted
            times: list[float] = []
            started = time.monotonic()
            # at least 3 samples; 2 of a shape slower than 5 s (a 503 after the 30 s timeout costs 30 s)
            least = 3 if first_ms < 5000 else 2
            while len(times) < samples and (time.monotonic() - started < budget_s or len(times) < least):
                status, body, ms = client.request("GET", path)
                times.append(ms)
            answer = orjson.loads(body)
            rows = len(answer["data"]) if status == 200 else 0
            row = Row(
                f"meter query: {label}",
                "scenario",
                requests_per_s=len(times) / max(1e-6, sum(times) / 1000),
                p50_ms=percentile(times, 50),
                p95_ms=percentile(times, 95),
                p99_ms=percentile(times, 99),
            )
            if meter == "tokens":
                row.goal = "p99 < 100 ms"
                row.goal_met = status == 200 and (row.p99_ms or 1e9) < 100
            if status == 200 and first_ms < 5000:
                run_ms, json_ms = _split(bench, meters[meter], params, site.site_id)
                row.notes.append(
                    f"HTTP 200, {rows:,} rows; {len(times)} sequential requests after a warm-up "
                    f"({first_ms:.0f} ms), one keep-alive connection; in the bench process (best of 2): "
                    f"meters.query.run (SQL + rows) {run_ms:.0f} ms, the answer's JSON {json_ms:.0f} ms"
                )
            elif status == 200:  # slower than 5 s: the time is the SQL (the EXPLAIN in the log)
                row.notes.append(
                    f"HTTP 200, {rows:,} rows; {len(times)} sequential requests after a warm-up "
                    f"({first_ms:.0f} ms), one keep-alive connection"
                )
            else:
                detail = answer.get("message") or answer
                row.notes.append(f"HTTP {status}: {detail}; {len(times)} requests")
            row.notes.append(
                f"{n:,} events of {month:%Y-%m} written by SQL as the worker writes bucket rows "
                f"({made['tokens_buckets']:,} bucket rows of the SUM meter, {made['users_values']:,} "
                f"unique-value rows; {fill_s:.0f} s); max {max(times):.0f} ms; load average "
                f"{os.getloadavg()[0]:.1f}"
            )
            bench.rows.append(row)
            bench.say(
                f"  {label}: HTTP {status}, {rows} rows, p50 {row.p50_ms or 0:.1f} ms, p99 "
                f"{row.p99_ms or 0:.1f} ms ({len(times)} requests)"
            )
            if label == "SUM, DAY windows, month" or (status == 200 and (row.p99_ms or 0) >= 100):
                _explain(bench, meters[meter], params, site.site_id)
    finally:
        client.close()
        bench.release(gw)
        for slug in slugs.values():  # the month's rows go with their meters (ON DELETE CASCADE)
            _run(bench, definitions.delete(conn, slug))


# ------------------------------------------------------------------ meters-lookup

_ADD_LEDGER = """
INSERT INTO ingest_idempotency (site_id, event_id, event_type, occurred_at, usage_month, billing_month,
    quantity, billing_class, path, received_at, ledgered_at, kafka_partition, kafka_offset, properties)
SELECT $1, id, 'page_view', t, $2, $2, 1, 'included', 'kafka', t, t, (g % 12)::int, g,
       '{"path": "/pricing", "plan": "pro", "ref": "bench"}'::jsonb
FROM (SELECT g, gen_random_uuid()::text AS id,
             $3::timestamptz + random() * ($4::timestamptz - $3::timestamptz) AS t
      FROM generate_series(1, $5::bigint) AS g) AS x
ORDER BY id
"""


async def _fill_ledger(
    database_url: str, site: uuid.UUID, n: int, say: Callable[[str], None]
) -> dict[str, int]:
    """n rows of random UUIDv4 ids over this month and the 11 before, one sorted INSERT per month
    (the primary key is then built in order: much faster than random inserts)."""
    from tests.bench.ledger_growth import MONTHS, months_back

    spans = months_back(datetime.now(UTC))
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("SET work_mem = '256MB'")
        t0 = time.monotonic()
        for k, (start, end) in enumerate(spans):
            rows = n // MONTHS + (1 if k < n % MONTHS else 0)
            await conn.fetchval("SELECT ledger_ensure_partition($1)", start.date())
            await conn.execute(_ADD_LEDGER, site, start.date(), start, end, rows)
            say(f"  month {start:%Y-%m}: {rows:,} rows ({time.monotonic() - t0:.0f} s)")
        await conn.execute("VACUUM (ANALYZE) ingest_idempotency")
        return {
            "rows": await conn.fetchval("SELECT count(*) FROM ingest_idempotency"),
            "bytes": await conn.fetchval(
                "SELECT coalesce(sum(pg_total_relation_size(relid)), 0)::bigint"
                " FROM pg_partition_tree('ingest_idempotency') WHERE isleaf"
            ),
        }
    finally:
        await conn.close()


async def _sample_ids(database_url: str, site: uuid.UUID, k: int, total: int) -> list[str]:
    conn = await asyncpg.connect(database_url)
    try:
        pct = min(100.0, max(0.01, 3 * k * 100 / max(1, total)))
        rows = await conn.fetch(
            f"SELECT event_id FROM ingest_idempotency TABLESAMPLE SYSTEM ({pct}) WHERE site_id = $1 LIMIT $2",
            site,
            3 * k,
        )
        if len(rows) < k:  # a page sample of small partitions can come back empty (the smoke form)
            rows = await conn.fetch(
                "SELECT event_id FROM ingest_idempotency WHERE site_id = $1 ORDER BY random() LIMIT $2",
                site,
                3 * k,
            )
        return [r["event_id"] for r in rows]
    finally:
        await conn.close()


def lookup(bench: Bench) -> None:
    from tests.bench.runner import GATEWAY_PORT

    env, plan = bench.env, bench.plan
    n = int(os.environ.get("OPSMANTIK_BENCH_LOOKUP_ROWS") or plan.size(50_000_000, 1_000_000, 20_000))
    k = plan.size(2000, 500, 20)
    topic = env.topic("b" if plan.smoke else "a")
    site = bench.site("meters-lookup")
    bench.say(f"scenario: event lookup on a {n:,}-row ledger")
    t0 = time.monotonic()
    made = asyncio.run(_fill_ledger(env.database_url, site.site_id, n, bench.say))
    fill_s = time.monotonic() - t0
    bench.say(f"  ledger: {made['rows']:,} rows, {made['bytes'] / 1e9:.1f} GB, written in {fill_s:.0f} s")
    ids = asyncio.run(_sample_ids(env.database_url, site.site_id, k, n))
    rng = random.Random(26)
    rng.shuffle(ids)
    known = ids[:k]
    unknown = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(max(2, k // 4))]
    gw = bench._gateway(topic)
    client = Http(GATEWAY_PORT, site.api_key)
    try:
        client.request("GET", f"/api/v1/events/{known[0]}")  # the connection and the pool: not counted
        for label, ids_, want in (("an event in the ledger", known, 200), ("an unknown event", unknown, 404)):
            times: list[float] = []
            bad = 0
            for event_id in ids_:
                status, body, ms = client.request("GET", f"/api/v1/events/{event_id}")
                times.append(ms)
                bad += status != want
            row = Row(
                f"event lookup: {label}, {n / 1e6:g}M-row ledger",
                "scenario",
                requests_per_s=len(times) / max(1e-6, sum(times) / 1000),
                p50_ms=percentile(times, 50),
                p95_ms=percentile(times, 95),
                p99_ms=percentile(times, 99),
                goal="p99 < 10 ms",
            )
            row.goal_met = bad == 0 and (row.p99_ms or 1e9) < 10
            row.notes.append(
                f"GET /api/v1/events/{{id}}, {len(times):,} distinct ids in random order, sequential, one "
                f"keep-alive connection; expected HTTP {want}, {bad} other; max {max(times):.1f} ms"
            )
            row.notes.append(
                f"ledger: {n:,} rows of one site over 12 month partitions ({made['rows']:,} in all), "
                f"random UUIDv4 ids, "
                f"{made['bytes'] / 1e9:.1f} GB heap + indexes, written by INSERT … SELECT generate_series "
                f"sorted by id per month in {fill_s:.0f} s, then VACUUM (ANALYZE); machine RAM "
                f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB"
            )
            bench.rows.append(row)
            bench.say(
                f"  {label}: p50 {row.p50_ms or 0:.2f} ms, p99 {row.p99_ms or 0:.2f} ms ({bad} unexpected)"
            )
    finally:
        client.close()
        bench.release(gw)
        asyncio.run(_drop_ledger(env.database_url, site.site_id))


async def _drop_ledger(database_url: str, site: uuid.UUID) -> None:
    """The scenario's rows go: the partitions are truncated when no other site has rows in them
    (a DELETE of 50M rows would take minutes), else the site's rows are deleted."""
    conn = await asyncpg.connect(database_url)
    try:
        others = await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM ingest_idempotency WHERE site_id < $1 OR site_id > $1)", site
        )
        if others:
            await conn.execute("DELETE FROM ingest_idempotency WHERE site_id = $1", site)
        else:
            await conn.execute("TRUNCATE ingest_idempotency")
    finally:
        await conn.close()
