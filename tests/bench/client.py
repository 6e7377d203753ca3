"""Bench row: `opsmantik send` of a 200,000-line NDJSON file (50,000 with --quick) to the
gateway alone, against the gateway's own 100-event-batch throughput (wrk) of the same run.
Same event shape as wrk's load.lua, but without event_id: the client assigns them (UUIDv7),
spills every event to SQLite and waits for every answer, as a real backfill does."""

from __future__ import annotations

import orjson

from tests.bench.env import OPSMANTIK, BenchError, SiteKey
from tests.bench.procs import CpuMeter, run_child
from tests.bench.runner import GATEWAY_PORT, Bench
from tests.bench.stats import Row, ratio

BASELINE = "100-event batches"
GOAL = 0.80


def _write(path: object, n: int, occurred_at: str) -> None:
    line = orjson.dumps({"type": "page_view", "occurred_at": occurred_at, "quantity": 1,
                         "properties": {"path": "/pricing", "plan": "pro", "ref": "bench"}}) + b"\n"
    with open(path, "wb") as f:  # type: ignore[call-overload]
        f.write(line * n)


def _send(bench: Bench, site: SiteKey, n: int, label: str) -> tuple[dict, float]:
    data = bench.env.logs / f"client-{label}.ndjson"
    data.parent.mkdir(parents=True, exist_ok=True)
    _write(data, n, bench.occurred_at)
    argv = [*OPSMANTIK, "send", str(data), "--url", f"http://127.0.0.1:{GATEWAY_PORT}", "--key", site.api_key,
            "--json", "--quiet", "--spill", str(bench.env.logs / f"client-{label}.spill")]
    run = run_child(argv, bench.env.env(bench.env.topic("a")), timeout_s=600)
    if run.returncode != 0:
        raise BenchError(f"opsmantik send exited {run.returncode}:\n{run.stdout}\n{run.stderr[-2000:]}")
    return orjson.loads(run.stdout.strip().splitlines()[-1]), run.cpu_s


def run(bench: Bench, site: SiteKey) -> None:
    n = 50_000 if bench.plan.quick else 200_000
    bench.say(f"scenario: opsmantik send of {n:,} NDJSON lines (the producer client)")
    gw = bench._gateway(bench.env.topic("a"))
    try:
        _send(bench, site, 2_000, "warm")
        ours, engines = CpuMeter([gw.pid]), CpuMeter(bench.env.engine_pids())
        for m in (ours, engines):
            m.start()
        summary, client_cpu = _send(bench, site, n, "measured")
        for m in (ours, engines):
            m.stop()
    finally:
        gw.stop()
    events = max(1, int(summary["events"]))
    base = bench.row(BASELINE)
    row = Row(f"opsmantik send, {n // 1000}k-line NDJSON", "scenario",
              events_per_s=float(summary["events_per_s"]),
              cpu_us_per_event=(ours.used + client_cpu) / events * 1e6,
              engine_cpu_us_per_event=engines.used / events * 1e6, baseline=BASELINE)
    row.ratio = ratio(row.events_per_s, base.events_per_s if base else None)
    row.goal = f"≥ {GOAL:.2f}× {BASELINE}"
    row.goal_met = bool(row.ratio is not None and row.ratio >= GOAL and summary["events"] == n
                        and summary["rejected"] == 0)
    row.notes.append(f"{summary['events']:,} events in {summary['seconds']:.1f} s by the client's own clock "
                     f"(first line read to last answer), {summary['retries']:,} retries, outcomes "
                     f"{summary['outcomes']}; CPU per event: gateway {ours.used / events * 1e6:.1f} µs + "
                     f"client {client_cpu / events * 1e6:.1f} µs (1000-event requests, 4 in flight, "
                     "every event through the SQLite spill)")
    bench.rows.append(row)
    bench.say(f"  {row.events_per_s:,.0f} ev/s, {row.ratio or 0:.2f}× {BASELINE}")
