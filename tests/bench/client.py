"""Bench row: `opsmantik send` of a 200,000-line NDJSON file (50,000 with --quick) to the
gateway alone, against the gateway's own 100-event-batch throughput under wrk. That baseline is
measured on the same gateway process just before and just after the client (their mean): on a
machine shared with other work, the `100-event batches` row of minutes earlier can be 2× off
either way, so the ratio to it is given in the notes only.
Same event shape as wrk's load.lua, but without event_id: the client assigns them (UUIDv7),
spills every event to SQLite and waits for every answer, as a real backfill does."""

from __future__ import annotations

import os

import orjson

from tests.bench.env import OPSMANTIK, BenchError, SiteKey
from tests.bench.procs import CpuMeter, run_child
from tests.bench.runner import GATEWAY_PORT, Bench
from tests.bench.stats import Row, ratio

BASELINE = "100-event batches"
BASELINE_NOW = "wrk 100-event batches, same gateway, before/after"
GOAL = 0.80


def _write(path: object, n: int, occurred_at: str) -> None:
    line = (
        orjson.dumps(
            {
                "type": "page_view",
                "occurred_at": occurred_at,
                "quantity": 1,
                "properties": {"path": "/pricing", "plan": "pro", "ref": "bench"},
            }
        )
        + b"\n"
    )
    with open(path, "wb") as f:  # type: ignore[call-overload]
        f.write(line * n)


def _send(bench: Bench, site: SiteKey, n: int, label: str) -> tuple[dict, float]:
    data = bench.env.logs / f"client-{label}.ndjson"
    data.parent.mkdir(parents=True, exist_ok=True)
    _write(data, n, bench.occurred_at)
    argv = [
        *OPSMANTIK,
        "send",
        str(data),
        "--url",
        f"http://127.0.0.1:{GATEWAY_PORT}",
        "--key",
        site.api_key,
        "--json",
        "--quiet",
        "--spill",
        str(bench.env.logs / f"client-{label}.spill"),
    ]
    run = run_child(argv, bench.env.env(bench.env.topic("a")), timeout_s=600)
    if run.returncode != 0:
        raise BenchError(f"opsmantik send exited {run.returncode}:\n{run.stdout}\n{run.stderr[-2000:]}")
    return orjson.loads(run.stdout.strip().splitlines()[-1]), run.cpu_s


def run(bench: Bench, site: SiteKey) -> None:
    n = bench.plan.size(200_000, 50_000, 2_000)
    bench.say(f"scenario: opsmantik send of {n:,} NDJSON lines (the producer client)")
    gw = bench._gateway(bench.env.topic("a"))
    try:
        if not bench.plan.smoke:
            _send(bench, site, 2_000, "warm")
        before = bench._load(GATEWAY_PORT, site.api_key, 100, "client-before", bench.plan.seconds, [])
        ours, engines = CpuMeter([gw.pid]), CpuMeter(bench.env.engine_pids())
        for m in (ours, engines):
            m.start()
        summary, client_cpu = _send(bench, site, n, "measured")
        for m in (ours, engines):
            m.stop()
        after = bench._load(GATEWAY_PORT, site.api_key, 100, "client-after", bench.plan.seconds, [])
    finally:
        bench.release(gw)
    bracket = (before.events_per_s + after.events_per_s) / 2
    events = max(1, int(summary["events"]))
    table = bench.row(BASELINE)
    row = Row(
        f"opsmantik send, {n // 1000}k-line NDJSON",
        "scenario",
        events_per_s=float(summary["events_per_s"]),
        cpu_us_per_event=(ours.used + client_cpu) / events * 1e6,
        engine_cpu_us_per_event=engines.used / events * 1e6,
        baseline=BASELINE_NOW,
    )
    row.ratio = ratio(row.events_per_s, bracket)
    row.goal = f"≥ {GOAL:.2f}× gateway's 100-event batches"
    row.goal_met = bool(
        row.ratio is not None and row.ratio >= GOAL and summary["events"] == n and summary["rejected"] == 0
    )
    row.notes.append(
        f"{summary['events']:,} events in {summary['seconds']:.1f} s by the client's own clock "
        f"(first line read to last answer), {summary['retries']:,} retries, outcomes "
        f"{summary['outcomes']}; CPU per event: gateway {ours.used / events * 1e6:.1f} µs + "
        f"client {client_cpu / events * 1e6:.1f} µs (1000-event requests, 4 in flight, "
        "every event through the SQLite spill)"
    )
    vs_table = ratio(row.events_per_s, table.events_per_s if table else None)
    row.notes.append(
        f"baseline: wrk 100-event batches on the same gateway {before.events_per_s:,.0f} ev/s "
        f"before and {after.events_per_s:,.0f} after (mean {bracket:,.0f}); vs the "
        f"`{BASELINE}` row above: {vs_table or 0:.2f}×; load average "
        f"{os.getloadavg()[0]:.1f}"
    )
    bench.rows.append(row)
    bench.say(
        f"  {row.events_per_s:,.0f} ev/s, {row.ratio or 0:.2f}× wrk batches before/after "
        f"({before.events_per_s:,.0f}/{after.events_per_s:,.0f}), {vs_table or 0:.2f}× the table's row"
    )
