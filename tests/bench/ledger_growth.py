"""Scenario `ledger-growth` (`make bench ONLY=ledger-growth`, `python -m tests.bench --only ledger-growth`).

The ledger at a year of traffic (docs/scaling.md): one hot site whose ledger already holds 0, 10M
and 50M rows (random UUIDv4 event ids spread over the current and the 11 previous months, loaded
with COPY, invoice rows to match), then, in the same run, gateway + worker end to end with new
random UUIDv4 ids (wrk WRK_IDS=uuid4) for each level:

- events/s end to end (the invoice shows every event sent) and freshness p99 of the run's rows;
  the ratio is against the empty-ledger level of the same run;
- bytes on disk per ledgered event during the run: heap (+TOAST) and indexes of every partition,
  and WAL, each as its growth over the run divided by the events ledgered;
- after the last level: `opsmantik billing close` + `opsmantik archive` of the oldest month (time,
  Parquet bytes per row) and the partition's bytes per row it freed.

OPSMANTIK_BENCH_LEDGER_LEVELS (default 0,10000000,50000000; --quick 0,200000) sets the levels;
a level whose projected COPY time (at the rate measured so far) exceeds
OPSMANTIK_BENCH_LEDGER_LOAD_BUDGET_S (default 900) is skipped, with the reason in the row notes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import asyncpg
from opsmantik.billing.archive_files import COLUMNS  # the ledger's columns, in the COPY lines' order

from tests.bench.env import BENCH_HOME, BenchError, wait_until
from tests.bench.procs import CpuMeter
from tests.bench.stats import Row, ratio
from tests.bench.wrk import run_wrk

if TYPE_CHECKING:
    from tests.bench.runner import Bench

MONTHS = 12
CHUNK = 50_000
PROPS = '"{""path"": ""/pricing"", ""plan"": ""pro"", ""ref"": ""bench""}"'


def months_back(now: datetime) -> list[tuple[datetime, datetime]]:
    """[start, end) of the current month and the 11 before it (the current one ends now)."""
    out = []
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = now - timedelta(minutes=10)
    for _ in range(MONTHS):
        out.append((start, end))
        end = start
        start = (start - timedelta(days=1)).replace(day=1)
    return out


def uuid4_text(raw: bytes) -> str:
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[raw[8] & 3]}{h[17:20]}-{h[20:32]}"


async def _chunks(site: uuid.UUID, n: int, counts: list[int], rng: random.Random) -> AsyncIterator[bytes]:
    now = datetime.now(UTC)
    spans = months_back(now)
    stamps = []  # per month: 2048 instants, as CSV text
    for start, end in spans:
        width = (end - start).total_seconds()
        stamps.append(
            [
                (start + timedelta(seconds=width * rng.random())).strftime("%Y-%m-%d %H:%M:%S.%f+00")
                for _ in range(2048)
            ]
        )
    labels = [s.date().isoformat() for s, _ in spans]
    s = str(site)
    done = 0
    while done < n:
        k = min(CHUNK, n - done)
        raw = os.urandom(16 * k)
        lines = []
        for i in range(k):
            m = rng.randrange(MONTHS)
            counts[m] += 1
            t = stamps[m][rng.randrange(2048)]
            lines.append(
                f"{s},{uuid4_text(raw[16 * i : 16 * i + 16])},page_view,{t},{labels[m]},{labels[m]},1,"
                f"included,kafka,{t},{t},{i % 12},{done + i},{PROPS}\n"
            )
        done += k
        yield "".join(lines).encode()


async def preload(database_url: str, site: uuid.UUID, n: int, seed: int) -> list[tuple[str, int]]:
    """COPY n random-UUIDv4 rows of `site` over 12 months into the ledger; add them to the invoice."""
    counts = [0] * MONTHS
    spans = months_back(datetime.now(UTC))
    conn = await asyncpg.connect(database_url)
    try:
        for start, _ in spans:
            await conn.fetchval("SELECT ledger_ensure_partition($1)", start.date())
        await conn.copy_to_table(
            "ingest_idempotency",
            source=_chunks(site, n, counts, random.Random(seed)),
            columns=COLUMNS,
            format="csv",
        )
        for (start, _), c in zip(spans, counts, strict=True):
            await conn.execute(
                "INSERT INTO site_usage_monthly AS u (site_id, month, events, quantity)"
                " VALUES ($1, $2, $3::bigint, $3::bigint) ON CONFLICT (site_id, month)"
                " DO UPDATE SET events = u.events + $3::bigint, quantity = u.quantity + $3::bigint",
                site,
                start.date(),
                c,
            )
        await conn.execute("VACUUM (ANALYZE) ingest_idempotency")
        with contextlib.suppress(asyncpg.PostgresError):
            await conn.execute("CHECKPOINT")  # every level starts right after a checkpoint
    finally:
        await conn.close()
    return [(s.date().isoformat(), c) for (s, _), c in zip(spans, counts, strict=True)]


async def _bytes(database_url: str) -> dict[str, int]:
    conn = await asyncpg.connect(database_url)
    try:
        r = await conn.fetchrow(
            "SELECT coalesce(sum(pg_table_size(relid)), 0)::bigint AS heap,"
            " coalesce(sum(pg_indexes_size(relid)), 0)::bigint AS indexes,"
            " (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint AS wal"
            " FROM pg_partition_tree('ingest_idempotency') WHERE isleaf"
        )
        return dict(r)
    finally:
        await conn.close()


def _levels(quick: bool, smoke: bool = False) -> list[int]:
    default = "2000" if smoke else "0,200000" if quick else "0,10000000,50000000"
    raw = os.environ.get("OPSMANTIK_BENCH_LEDGER_LEVELS") or default
    return sorted({int(x) for x in raw.split(",") if x.strip()})


def ledger_growth(bench: Bench) -> None:
    from tests.bench.runner import CONNECTIONS, GATEWAY_PORT

    env, plan = bench.env, bench.plan
    site, probe = bench.site("growth"), bench.site("growth-probe")
    budget = float(os.environ.get("OPSMANTIK_BENCH_LEDGER_LOAD_BUDGET_S") or 900)
    # --smoke: end-to-end's topic, whose worker and gateway are still up (Bench.kept): a worker's
    # start-up and group join would be most of this scenario's smoke seconds
    topic = env.topic("b" if plan.smoke else "g")
    bench.say("scenario: ledger growth (0 / 10M / 50M preloaded rows, random UUIDv4 ids)")
    worker = bench._service("worker", topic)
    relay = bench._service("relay", topic)  # a flood on this box sends some events through the outbox
    gw = bench._gateway(topic)
    occurred = (datetime.now(UTC) - timedelta(seconds=30)).isoformat(timespec="seconds")
    run_wrk(
        f"http://127.0.0.1:{GATEWAY_PORT}",
        duration_s=1,
        connections=2,
        batch=100,
        prefix=f"{env.tag}-gwarm",
        occurred_at=occurred,
        api_key=probe.api_key,
        rate=20,
    )
    ok, _ = wait_until(lambda: env.value("usage_events", probe.site_id) > 0, 90, 0.2)
    if not ok:
        raise BenchError(f"worker ledgered nothing within 90 s:\n{worker.tail()}")
    loaded, load_rate, base = 0, 0.0, None
    oldest_rows = 0
    for level in _levels(plan.quick, plan.smoke):
        if level > loaded:
            projected = (level - loaded) / load_rate if load_rate else 0.0
            if projected > budget:
                bench.say(f"  skipping {level:,} rows: COPY projected {projected:.0f} s > {budget:.0f} s")
                skipped = Row(f"ledger growth {level / 1e6:g}M rows", "scenario")
                skipped.notes.append(
                    f"NOT RUN: loading {level - loaded:,} more rows at the {load_rate:,.0f} rows/s measured "
                    f"would take {projected:.0f} s (> OPSMANTIK_BENCH_LEDGER_LOAD_BUDGET_S={budget:.0f})"
                )
                bench.rows.append(skipped)
                continue
            t0 = time.monotonic()
            counts = asyncio.run(preload(env.database_url, site.site_id, level - loaded, level))
            took = time.monotonic() - t0
            load_rate = (level - loaded) / took
            oldest_rows += counts[-1][1]
            bench.say(f"  preloaded {level - loaded:,} rows in {took:.0f} s ({load_rate:,.0f} rows/s)")
            loaded = level
        name = f"ledger growth {level / 1e6:g}M rows"
        before = asyncio.run(_bytes(env.database_url))
        usage0 = env.value("usage_events", site.site_id)
        ours, engines = CpuMeter([gw.pid, worker.pid, relay.pid]), CpuMeter(env.engine_pids())
        ours.start()
        engines.start()
        t0 = time.monotonic()
        r = run_wrk(
            f"http://127.0.0.1:{GATEWAY_PORT}",
            duration_s=plan.seconds,
            connections=CONNECTIONS,
            batch=100,
            prefix=f"{env.tag}-lg{level}",
            occurred_at=occurred,
            api_key=site.api_key,
            uuid4_ids=True,
        )
        ok, t_all = wait_until(
            lambda n=usage0 + r.events: env.value("usage_events", site.site_id) >= n, 240, 0.05
        )
        ours.stop()
        engines.stop()
        shown = env.value("usage_events", site.site_id) - usage0
        after = asyncio.run(_bytes(env.database_url))
        # freshness at a paced load below capacity (half the empty ledger's flood rate): a flood only
        # measures the queue the load generator builds
        pace = (base.events_per_s if base else shown / (t_all - t0)) / 2
        paced_from = datetime.now(UTC)
        usage1 = env.value("usage_events", site.site_id)
        p = run_wrk(
            f"http://127.0.0.1:{GATEWAY_PORT}",
            duration_s=plan.seconds,
            connections=16,
            batch=100,
            prefix=f"{env.tag}-lgp{level}",
            occurred_at=occurred,
            api_key=site.api_key,
            rate=pace / 100,
            uuid4_ids=True,
        )
        wait_until(lambda n=usage1 + p.events: env.value("usage_events", site.site_id) >= n, 120, 0.05)
        fresh = env.query("freshness_since", site.site_id, paced_from)
        row = Row(name, "scenario", events_per_s=shown / (t_all - t0), requests_per_s=r.requests_per_s)
        row.p50_ms, row.p95_ms, row.p99_ms = r.p50_ms, r.p95_ms, r.p99_ms
        row.cpu_us_per_event = ours.used / max(1, shown) * 1e6
        row.engine_cpu_us_per_event = engines.used / max(1, shown) * 1e6
        if fresh is not None and fresh["n"]:
            row.fresh_p50_ms, row.fresh_p99_ms = float(fresh["p50"]), float(fresh["p99"])
        if base is None:
            base = row
        row.baseline = base.name
        row.ratio = ratio(row.events_per_s, base.events_per_s)
        row.goal = "≥ 0.9 of the empty-ledger rate, fresh p99 < 1 s"
        row.goal_met = bool(ok and (row.ratio or 0) >= 0.9 and (row.fresh_p99_ms or 1e9) < 1000)
        per = {k: (after[k] - before[k]) / max(1, shown) for k in ("heap", "indexes", "wal")}
        row.notes.append(
            f"{loaded:,} rows preloaded; {r.events:,} new events acknowledged in {r.duration_s:.1f} s, the "
            f"invoice showed {shown:,} {t_all - t0:.1f} s after the first request"
            + ("" if ok else " (TIMED OUT)")
            + f"; {env.value('outbox_count', site.site_id):,} still in the outbox"
        )
        row.notes.append(
            f"freshness: {p.events:,} events paced at {pace:,.0f} ev/s (half the empty ledger's flood rate)"
        )
        row.notes.append(
            f"bytes per ledgered event during the run: heap {per['heap']:.0f} + indexes {per['indexes']:.0f}"
            f" + WAL {per['wal']:.0f} = {sum(per.values()):.0f}; whole ledger now heap {after['heap']:,} +"
            f" indexes {after['indexes']:,} bytes"
        )
        bench.rows.append(row)
        bench.say(
            f"  {name}: {row.events_per_s:,.0f} ev/s (×{row.ratio or 0:.2f}), fresh p99 "
            f"{row.fresh_p99_ms or 0:,.0f} ms; heap {per['heap']:.0f} + idx {per['indexes']:.0f} + "
            f"WAL {per['wal']:.0f} B/event"
        )
    bench.release(worker)
    bench.release(relay)
    bench.release(gw)
    if loaded:
        _archive_oldest(bench, oldest_rows)


def _archive_oldest(bench: Bench, rows: int) -> None:
    env = bench.env
    month = months_back(datetime.now(UTC))[-1][0].date()
    label = month.strftime("%Y-%m")
    topic = env.topic("a")
    part = "ingest_idempotency_p" + month.strftime("%Y_%m")
    size = env.query("partition_bytes", part)
    t0 = time.monotonic()
    env.cli("billing", "close", "--month", label, "--json", topic=topic, timeout_s=3600)
    close_s = time.monotonic() - t0
    dest = BENCH_HOME / "archive" / env.tag
    dest.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    out = json.loads(
        env.cli("archive", "--month", label, "--to", str(dest), "--json", topic=topic, timeout_s=7200)
    )
    took = time.monotonic() - t0
    row = Row(f"archive + verify one month ({out['rows'] / 1e6:.2f}M rows)", "scenario")
    row.events_per_s = out["rows"] / took
    per_row = (size["total"] / out["rows"]) if size and out["rows"] else 0
    row.notes.append(
        f"opsmantik archive {took:.1f} s (write {out['write_s']:.1f} s, read back + verify "
        f"{out['verify_s']:.1f} s; the month's close before it {close_s:.1f} s); Parquet "
        f"{out['bytes']:,} bytes = {out['bytes_per_row']:.1f} bytes per row vs {per_row:.0f} bytes per row "
        f"in Postgres (heap + indexes); {out['statements_verified']} statement(s) verified, partition dropped"
    )
    if out["rows"] < 10_000_000:
        row.notes.append(
            f"a 10M-row month extrapolated linearly: {took * 10_000_000 / out['rows']:.0f} s "
            "(archive reads and writes rows in one pass each, no step grows faster than the rows)"
        )
    bench.rows.append(row)
    bench.say(f"  archive of {label}: {out['rows']:,} rows in {took:.1f} s, {out['bytes_per_row']} B/row")
