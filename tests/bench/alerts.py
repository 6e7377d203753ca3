"""Bench scenarios of issue 27, usage alerts (docs/alerts.md, docs/benchmarks.md "Usage alerts").

`alerts-delivery`: crossing → delivery at 20,000 ev/s offered. SITES sites share the paced load
(one wrk each, 20,000/SITES ev/s), each with RULES threshold rules on the built-in `events` meter
(COUNT) spaced evenly under the events the site gets in the run, so each rule crosses once
(RULES × SITES crossings, spread over the run: enough for a p99). The dispatcher delivers to an
aiohttp receiver in this process that verifies every webhook with the `standardwebhooks` library
and records its arrival (time.time(), the same clock as Postgres'). The crossing's time is the
commit time of the ledger transaction that crossed: pg_xact_commit_timestamp(xmin) of that
batch's ledger rows (CROSSINGS_SQL), with track_commit_timestamp turned on in the bench's private
Postgres. The commit is when the crossing exists for anyone (the outbox row becomes visible to the
dispatcher then), so commit → arrival is the part alerts add; the event's accept time (received_at)
→ arrival is reported too: it adds the ingest path (Kafka, the worker's batch), which the
end-to-end freshness row measures already. On the shared stack (--smoke --on-stack) commit
timestamps are off and not changed there: the worker's decision time (the webhook's `timestamp`,
taken in the same transaction just before its commit) stands in; the notes say which.

`alerts-rules-cost`: a paced load the worker keeps up with (COST_EVENTS_S, 100-event batches) on
two sites with the same quota and hard cap, one with no rule and one with MAX_RULES_PER_SITE (100)
rules: the three quota built-ins and 97 thresholds on the `events` and `quantity` meters, far
above anything the run reaches (no crossing). COST_ROUNDS pairs of runs, none then rules, then
rules then none, and so on, on one worker and gateway (same run); each run's ingest p95 (wrk)
and the worker's CPU per event (its process tree's utime + stime from the first request until the
invoice shows every event, ÷ events); the ratios are the medians of each round's rules ÷ none.
At 20,000 ev/s offered a loaded machine got 7,000-14,000 through, and the worker's CPU per event
falls as its batches grow, so the ratio mixed the rules' cost with the machine's
(docs/benchmarks.md "Usage alerts").
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from statistics import median
from typing import Any

import asyncpg
import orjson
import standardwebhooks
from aiohttp import web
from opsmantik.alerts import rules
from opsmantik.alerts.urls import UrlPolicy
from opsmantik.config import LOCAL_ALERTS_SECRET
from opsmantik.sites import create_site_with_key

from tests.bench.env import BenchError, SiteKey, wait_until
from tests.bench.procs import CpuMeter
from tests.bench.runner import BEFORE_GATEWAY_PORT, E2E_TARGET_EVENTS_S, GATEWAY_PORT, Bench
from tests.bench.stats import Row, percentile
from tests.bench.wrk import LoadResult, run_wrk
from tests.support.process import Process, free_port

DEV = UrlPolicy(allow_http=True, allow_private=True)  # the receiver is http://127.0.0.1
DISPATCHER_ENV = {
    "OPSMANTIK_ALERTS_ALLOW_HTTP": "1",
    "OPSMANTIK_ALERTS_ALLOW_PRIVATE": "1",
    "OPSMANTIK_DISPATCHER_METRICS_PORT": "-1",
}
COST_EVENTS_S = 5_000  # the rules-cost runs' paced load: kept up with, so both sites' batches match
COST_ROUNDS = 4  # none/rules pairs, the order alternating
LIMIT = 10**12  # quota and hard cap of the rules-cost sites: set (the built-ins need them), never reached

# Per crossed webhook of the sites: the crossing transaction's commit time and the accept time of
# the event that reached the line. The outbox row's created_at and the batch's ledger rows'
# ledgered_at are both now() of that transaction (its start; one site's batches never overlap:
# the site lock), which finds the batch's rows; the event that crossed is the
# (threshold − total before the batch)-th of them in ledger order (partition, offset; a request's
# events share one message, so one received_at). The body's value is the total after the batch.
CROSSINGS_SQL = """
WITH o AS (
    SELECT o.webhook_id, o.site_id, o.created_at, o.body, r.threshold::bigint AS t,
           (convert_from(o.body, 'UTF8')::jsonb -> 'data' ->> 'value')::bigint AS v
    FROM alert_outbox o JOIN alert_rules r ON r.rule_id = o.rule_id
    WHERE o.site_id = ANY($1::uuid[]) AND o.event_type = 'usage.threshold.crossed'
), b AS (
    SELECT site_id, ledgered_at, received_at, xmin,
           row_number() OVER (PARTITION BY site_id, ledgered_at ORDER BY kafka_partition, kafka_offset) AS n,
           count(*) OVER (PARTITION BY site_id, ledgered_at) AS c
    FROM ingest_idempotency
    WHERE site_id = ANY($1::uuid[]) AND ledgered_at IN (SELECT created_at FROM o)
)
SELECT o.webhook_id, o.body, extract(epoch FROM b.received_at)::float8 AS accepted,
       CASE WHEN $2 THEN extract(epoch FROM pg_xact_commit_timestamp(b.xmin))::float8 END AS committed
FROM o LEFT JOIN b ON b.site_id = o.site_id AND b.ledgered_at = o.created_at AND b.n = o.t - (o.v - b.c)
"""


# ------------------------------------------------------------ the receiver


@dataclass
class Receiver:
    """An aiohttp server on its own thread and loop: verifies each webhook (standardwebhooks, the
    rule's secret) and records the first arrival of each webhook-id."""

    secrets: dict[str, standardwebhooks.Webhook] = field(default_factory=dict)  # rule_id -> verifier
    arrivals: dict[str, float] = field(default_factory=dict)  # webhook-id -> time.time()
    duplicates: int = 0
    refused: int = 0
    port: int = field(default_factory=free_port)
    _loop: asyncio.AbstractEventLoop | None = None
    _runner: web.AppRunner | None = None
    _thread: threading.Thread | None = None

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def add(self, rule_id: uuid.UUID, secret: str) -> None:
        self.secrets[str(rule_id)] = standardwebhooks.Webhook(secret)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        arrived = time.time()
        try:
            rule_id = orjson.loads(body)["data"]["rule_id"]
            self.secrets[rule_id].verify(body, dict(request.headers))
        except (KeyError, TypeError, ValueError, standardwebhooks.WebhookVerificationError):
            self.refused += 1
            return web.Response(status=400)
        wid = request.headers["webhook-id"]
        if wid in self.arrivals:
            self.duplicates += 1
        else:
            self.arrivals[wid] = arrived
        return web.Response(status=204)

    def start(self) -> Receiver:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="receiver", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(10)
        return self

    async def _serve(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    def stop(self) -> None:
        if self._loop is None:
            return
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self._loop.close()
        self._loop = None


# ------------------------------------------------------------ set-up helpers


def _run(bench: Bench, coro: Any) -> Any:
    """A coroutine on the bench's own polling connection and loop (env._connection)."""
    bench.env._connection()
    assert bench.env._loop is not None
    return bench.env._loop.run_until_complete(coro)


def _site(bench: Bench, name: str, limit: int | None = None) -> SiteKey:
    """A site of this scenario (as env.create_site: no rate limit), with a quota and hard cap."""
    conn = bench.env._connection()
    key = _run(
        bench,
        create_site_with_key(
            conn,
            f"bench-{name}-{bench.env.tag}",
            rate=1_000_000.0,
            burst=1_000_000,
            monthly_quota=limit,
            hard_cap=limit,
        ),
    )
    return SiteKey(key.site_id, key.api_key)


def _rule(bench: Bench, site: SiteKey, url: str, **kind: Any) -> rules.NewRule:
    conn = bench.env._connection()
    new: rules.NewRule = _run(bench, rules.create(conn, LOCAL_ALERTS_SECRET, DEV, site.site_id, url, **kind))
    return new


def _commit_timestamps(bench: Bench) -> bool:
    """track_commit_timestamp on: turned on (a restart of the bench's private Postgres, before any
    service of the scenario starts) unless the stack is the shared one."""
    conn = bench.env._connection()
    if _run(bench, conn.fetchval("SHOW track_commit_timestamp")) == "on":
        return True
    if bench.env.shared:
        return False
    bench.say("  track_commit_timestamp on: restarting the private Postgres")
    _run(bench, conn.execute("ALTER SYSTEM SET track_commit_timestamp = on"))
    bench.env.close_queries()
    bench.env.stack.pg_down()
    bench.env.stack.pg_up()
    conn = bench.env._connection()
    return bool(_run(bench, conn.fetchval("SHOW track_commit_timestamp")) == "on")


def _topic(bench: Bench, phase: str) -> str:
    """--smoke: end-to-end's topic, so the kept worker and gateway serve (start-ups were most of a
    smoke run); otherwise a topic of the scenario's own (no worker starts on an old backlog)."""
    return bench.env.topic("b" if bench.plan.smoke else phase)


def _warm(bench: Bench, worker: Process, topic: str, port: int = GATEWAY_PORT) -> None:
    """The worker has joined its group once a probe event shows up in the invoice."""
    probe = bench.site("probe-" + topic.split(".")[2])
    before = bench.env.value("usage_events", probe.site_id)
    bench._load(port, probe.api_key, 100, f"al-warm-{before}-{port}", 1, [], connections=2, rate=20)
    ok, _ = wait_until(lambda: bench.env.value("usage_events", probe.site_id) > before, 90, 0.2)
    if not ok:
        raise BenchError(f"worker ledgered nothing within 90 s:\n{worker.tail()}")


def _paced(
    bench: Bench,
    site: SiteKey,
    prefix: str,
    rate_ev_s: float,
    seconds: int,
    conns: int,
    threads: int = 2,
    port: int = GATEWAY_PORT,
) -> LoadResult:
    return run_wrk(
        f"http://127.0.0.1:{port}",
        duration_s=seconds,
        connections=conns,
        batch=100,
        prefix=f"{bench.env.tag}-{prefix}",
        occurred_at=bench.occurred_at,
        api_key=site.api_key,
        rate=rate_ev_s / 100,
        threads=threads,
    )


def _wait_ledgered(bench: Bench, sites: list[SiteKey], sent: int) -> tuple[bool, float]:
    """Until the invoices show `sent` events, less those the gateway answered from its outbox
    (delivery deadline missed on a loaded machine: they reach the ledger only through the relay,
    not running here; as end_to_end)."""
    return wait_until(
        lambda: (
            sum(
                bench.env.value("usage_events", s.site_id) + bench.env.value("outbox_count", s.site_id)
                for s in sites
            )
            >= sent
        ),
        60 if bench.plan.quick else 180,
        0.05,
    )


def _ms(values: list[float], p: float) -> float:
    v = percentile(values, p)
    return 0.0 if v is None else v * 1000


# ------------------------------------------------------------ alerts-delivery


def delivery(bench: Bench) -> None:
    n_sites = bench.plan.size(5, 5, 1)
    per_site = bench.plan.size(rules.MAX_RULES_PER_SITE, rules.MAX_RULES_PER_SITE, 10)
    seconds = bench.plan.seconds
    rate = E2E_TARGET_EVENTS_S / n_sites
    bench.say(
        f"scenario: alerts crossing → delivery, {E2E_TARGET_EVENTS_S:,} ev/s offered over {n_sites} "
        f"site(s), {per_site} threshold rules each"
    )
    commit_ts = _commit_timestamps(bench)
    topic = _topic(bench, "al")
    receiver = Receiver().start()
    worker = bench._service("worker", topic)
    gw = bench._gateway(topic)
    dispatcher = bench._service("dispatcher", topic, **DISPATCHER_ENV)
    try:
        # Thresholds spaced evenly up to 80 % of what a site is offered, so every rule crosses once
        # even when the gateway falls somewhat short of the offered rate.
        # (--smoke: 50 apart, a 1 s run on a loaded machine may get a few hundred events through)
        step = 50 if bench.plan.smoke else max(1, int(rate * seconds * 0.8 / per_site))
        sites = [_site(bench, f"alerts-delivery-{i}") for i in range(n_sites)]
        for s in sites:
            for k in range(1, per_site + 1):
                new = _rule(bench, s, receiver.url(), meter="events", threshold=Decimal(k * step))
                receiver.add(new.rule_id, new.secret)
        _warm(bench, worker, topic)
        disp_cpu = CpuMeter([dispatcher.pid]).start()
        t0 = time.monotonic()
        with ThreadPoolExecutor(n_sites) as pool:
            futures = [
                pool.submit(_paced, bench, s, f"al-{i}", rate, seconds, 16, 1) for i, s in enumerate(sites)
            ]
            loads = [f.result() for f in futures]
        sent = sum(r.events for r in loads)
        for i, r in enumerate(loads):
            bench.say(
                f"  al-{i}: {r.events_per_s:,.0f} ev/s offered, p95 {r.p95_ms:.1f} ms, "
                f"{r.failed} of {r.requests} requests failed"
            )
        ok, t_all = _wait_ledgered(bench, sites, sent)
        conn = bench.env._connection()
        outboxed = int(
            _run(
                bench,
                conn.fetchval(
                    "SELECT count(*) FROM alert_outbox WHERE site_id = ANY($1::uuid[])",
                    [s.site_id for s in sites],
                ),
            )
        )
        outboxed_events = sum(bench.env.value("outbox_count", s.site_id) for s in sites)
        delivered_ok, _ = wait_until(lambda: len(receiver.arrivals) >= outboxed, 60, 0.05)
        disp_cpu.stop()
        found: list[asyncpg.Record] = _run(
            bench, conn.fetch(CROSSINGS_SQL, [s.site_id for s in sites], commit_ts)
        )
    finally:
        bench.release(dispatcher)
        receiver.stop()
    since_commit, since_accept, since_decide, commit_lag = [], [], [], []
    unmatched = 0  # crossings whose batch rows the query did not find (should be none)
    for rec in found:
        arrived = receiver.arrivals.get(rec["webhook_id"])
        decided = datetime.fromisoformat(orjson.loads(rec["body"])["timestamp"]).timestamp()
        unmatched += rec["accepted"] is None
        if rec["committed"] is not None:
            commit_lag.append(rec["committed"] - decided)
        if arrived is None:
            continue
        since_decide.append(arrived - decided)
        if rec["committed"] is not None:
            since_commit.append(arrived - rec["committed"])
        if rec["accepted"] is not None:
            since_accept.append(arrived - rec["accepted"])
    basis = since_commit if commit_ts else since_decide
    what = (
        "commit of the crossing transaction" if commit_ts else "the worker's decision (commit timestamps off)"
    )
    if not basis:
        raise BenchError(
            f"no crossing delivered: {len(found)} crossed, {len(receiver.arrivals)} arrived, "
            f"{receiver.refused} refused:\n{dispatcher.tail()}"
        )
    offered = sum(r.events for r in loads) / max(r.duration_s for r in loads)
    row = Row(
        f"alerts: crossing → delivery @ {E2E_TARGET_EVENTS_S // 1000}k ev/s",
        "scenario",
        events_per_s=offered,
        p50_ms=_ms(basis, 50),
        p95_ms=_ms(basis, 95),
        p99_ms=_ms(basis, 99),
        goal="p99 < 2 s",
    )
    row.goal_met = bool(ok and delivered_ok and (percentile(basis, 99) or 1e9) < 2.0)
    row.notes.append(
        f"latency from the {what} to the receiver's arrival (verified Standard Webhooks): "
        f"{len(basis)} of {len(found)} crossings ({n_sites} sites × {per_site} rules on the events "
        f"meter, {step:,} apart), max {max(basis) * 1000:,.0f} ms; {receiver.duplicates} duplicate, "
        f"{receiver.refused} refused"
        + (f"; {unmatched} crossing(s) without their batch's ledger rows found" if unmatched else "")
    )
    row.notes.append(
        f"{sent:,} events acknowledged ({offered:,.0f} ev/s over {n_sites} wrk processes), the "
        f"invoice showed them {t_all - t0:.1f} s after the first request"
        + ("" if ok else " (TIMED OUT)")
        + (
            f"; {outboxed_events:,} answered from the gateway's outbox (deadline missed: no relay runs "
            "here, so they are not ledgered and cross nothing)"
            if outboxed_events
            else ""
        )
    )
    if since_accept:
        row.notes.append(
            f"from the crossing event's accept (received_at): p50 {_ms(since_accept, 50):,.0f} ms, "
            f"p99 {_ms(since_accept, 99):,.0f} ms, max {max(since_accept) * 1000:,.0f} ms"
        )
    if commit_lag:
        row.notes.append(
            f"from the worker's decision: p50 {_ms(since_decide, 50):,.0f} ms, p99 "
            f"{_ms(since_decide, 99):,.0f} ms (decision → commit p50 {_ms(commit_lag, 50):,.0f} ms, "
            f"min {min(commit_lag) * 1000:,.0f}, max {max(commit_lag) * 1000:,.0f} ms)"
        )
    row.notes.append(
        f"dispatcher CPU {disp_cpu.used / max(1, len(receiver.arrivals)) * 1e3:.2f} ms per webhook "
        f"({disp_cpu.used:.2f} s over the run and the wait); load average {_load():.1f}"
    )
    bench.rows.append(row)
    bench.say(
        f"  {len(basis)} crossings delivered: p50 {row.p50_ms:,.0f} ms, p99 {row.p99_ms:,.0f} ms, "
        f"max {max(basis) * 1000:,.0f} ms ({'commit' if commit_ts else 'decision'} → arrival)"
    )
    bench.release(worker)
    bench.release(gw)


def _load() -> float:
    import os

    return os.getloadavg()[0]


# ------------------------------------------------------------ alerts-rules-cost


@dataclass
class CostRun:
    load: LoadResult
    worker_us: float
    seconds: float


@dataclass
class Variant:
    """This checkout's worker and gateway, or (`--before`) another checkout's, on a topic each."""

    label: str  # "" or " (before)"
    topic: str
    worker: Process
    gateway: Process
    port: int
    runs: dict[str, list[CostRun]] = field(default_factory=lambda: {"none": [], "rules": []})


def rules_cost(bench: Bench) -> None:
    seconds = bench.plan.seconds
    bench.say(f"scenario: alerts rules cost, {COST_EVENTS_S:,} ev/s paced, 0 vs 100 rules per site")
    variants: list[Variant] = []
    if bench.before:  # the before checkout's worker and gateway, runs interleaved with this one's
        topic0 = bench.env.topic("ar0")
        variants.append(
            Variant(
                " (before)",
                topic0,
                bench._service("worker", topic0, **bench.before_env()),
                bench._gateway(topic0, BEFORE_GATEWAY_PORT, **bench.before_env()),
                BEFORE_GATEWAY_PORT,
            )
        )
    topic = _topic(bench, "ar")
    variants.append(Variant("", topic, bench._service("worker", topic), bench._gateway(topic), GATEWAY_PORT))
    none, ruled = _site(bench, "rules-none", LIMIT), _site(bench, "rules-100", LIMIT)
    url = "http://127.0.0.1:9/never-called"
    for b in rules.BUILTINS:
        _rule(bench, ruled, url, builtin=b)
    meters = ("events", "quantity")
    for k in range(rules.MAX_RULES_PER_SITE - len(rules.BUILTINS)):
        # far above the run's totals: no crossing, the steady cost of rules that stay under
        _rule(bench, ruled, url, meter=meters[k % 2], threshold=Decimal(10**12 + k))
    for v in variants:
        _warm(bench, v.worker, v.topic, v.port)
    # Each site's first batch seeds its rules' state (one meter_buckets read per rule and period,
    # once a month): done here, so the measured runs show the steady per-batch cost.
    for s, name in () if bench.plan.smoke else ((none, "none"), (ruled, "rules")):
        before = bench.env.value("usage_events", s.site_id)
        bench._load(variants[-1].port, s.api_key, 100, f"rc-warm-{name}", 1, [], connections=2, rate=20)
        wait_until(lambda s=s, b=before: bench.env.value("usage_events", s.site_id) > b, 60, 0.1)
    rounds = 1 if bench.plan.smoke else COST_ROUNDS
    # none-rules, then rules-none, ...: a drift within a round (the machine, the worker warming)
    # weighs on each side alike
    pairs = [("none", "rules") if k % 2 == 0 else ("rules", "none") for k in range(rounds)]
    order = [(v, name) for pair in pairs for v in variants for name in pair]
    for i, (v, name) in enumerate(order):
        site = none if name == "none" else ruled
        start = bench.env.value("usage_events", site.site_id)
        cpu = CpuMeter([v.worker.pid]).start()
        t0 = time.monotonic()
        r = _paced(bench, site, f"rc-{name}-{i}", COST_EVENTS_S, seconds, 64, port=v.port)
        ok, t_all = _wait_ledgered(bench, [site], start + r.events)
        cpu.stop()
        if not ok:
            raise BenchError(f"rules cost: run {name}{v.label} not ledgered in time:\n{v.worker.tail()}")
        shown = bench.env.value("usage_events", site.site_id) - start
        v.runs[name].append(CostRun(r, cpu.used / max(1, shown) * 1e6, t_all - t0))
        bench.say(
            f"  {name}{v.label}: {r.events_per_s:,.0f} ev/s offered, p95 {r.p95_ms:.1f} ms, worker "
            f"{v.runs[name][-1].worker_us:.1f} µs/ev ({r.failed} failed)"
        )
    if bench.plan.profile:
        # After the measured runs (py-spy's own CPU is not in them): where the worker's time goes
        # with 100 rules, crossings.decide's share of it.
        for v in variants:
            bench.say(f"  profiling the worker{v.label} (py-spy) over one more 100-rule run")
            pname = f"worker 100 alert rules{v.label}"
            proc = bench._profile(pname, v.worker.pid, seconds)
            start = bench.env.value("usage_events", ruled.site_id)
            r = _paced(bench, ruled, f"rc-prof{v.port}", COST_EVENTS_S, seconds, 64, port=v.port)
            _wait_ledgered(bench, [ruled], start + r.events)
            bench._collect(pname, proc)
    for v in variants:
        bench.release(v.worker)
        bench.release(v.gateway)
        _cost_rows(bench, v)


def _cost_rows(bench: Bench, v: Variant) -> None:
    rows = {}
    for name, label, kind in (
        ("none", "0 alert rules", "baseline"),
        ("rules", "100 alert rules", "scenario"),
    ):
        rs = v.runs[name]
        row = Row(
            f"alerts: paced {COST_EVENTS_S // 1000}k ev/s, {label}{v.label}",
            kind,
            events_per_s=median([c.load.events_per_s for c in rs]),
            requests_per_s=median([c.load.requests_per_s for c in rs]),
            p50_ms=median([c.load.p50_ms for c in rs]),
            p95_ms=median([c.load.p95_ms for c in rs]),
            p99_ms=median([c.load.p99_ms for c in rs]),
            cpu_us_per_event=median([c.worker_us for c in rs]),
        )
        row.notes.append(
            "runs (alternating none/rules, same worker and gateway; the row holds their medians): "
            + "; ".join(
                f"p95 {c.load.p95_ms:.1f} ms, worker {c.worker_us:.1f} µs/ev, {c.load.events:,} events "
                f"ledgered in {c.seconds:.1f} s"
                for c in rs
            )
        )
        if v.label:
            row.notes.append(f"the worker and gateway of {bench.before} (PYTHONPATH), topic of their own")
        rows[name] = row
        bench.rows.append(row)
    base, row = rows["none"], rows["rules"]
    pairs = list(zip(v.runs["none"], v.runs["rules"], strict=True))
    cpu_ratios = [r.worker_us / n.worker_us for n, r in pairs]
    p95_ratios = [r.load.p95_ms / n.load.p95_ms for n, r in pairs]
    cpu_ratio, p95_ratio = median(cpu_ratios), median(p95_ratios)
    row.baseline, row.ratio = base.name, cpu_ratio
    row.goal = "worker CPU/ev and ingest p95 ≤ 1.05× 0 rules (medians of the rounds' ratios)"
    row.goal_met = cpu_ratio <= 1.05 and p95_ratio <= 1.05
    row.notes.insert(
        0,
        f"ratio = median of the rounds' worker CPU per event (the worker process tree, first request "
        f"to the invoice showing every event) ÷ the 0-rule site's: "
        f"{', '.join(f'{x:.3f}' for x in cpu_ratios)}; ingest p95 (wrk) {p95_ratio:.3f}× "
        f"({', '.join(f'{x:.3f}' for x in p95_ratios)}); "
        "rules: quota-80, quota-100, hard-cap + 97 thresholds on the events/quantity meters never "
        f"reached; both sites have the same quota and cap; load average {_load():.1f}",
    )
    bench.say(
        f"  100 rules vs none{v.label}: worker CPU/ev {cpu_ratio or 0:.3f}×, ingest p95 {p95_ratio or 0:.3f}×"
    )
