"""Bench scenario: 1,000 req/s of GET /status beside ingest load (docs/benchmarks.md).

The status page is public and unauthenticated, so it must be cheap: served from a snapshot the
gateway refreshes in the background, never a database query per request. This measures it: the
same paced ingest load (100-event batches, half the measured peak) runs alone, then with a second
wrk process sending 1,000 GET /status per second (as a browser: gzip accepted), then alone again;
the two alone runs give the run-to-run noise. The goal: /api/sync
p95 and throughput with the status load stay within that noise (plus a floor of 10 % / 1 ms for
p95 and 3 % for throughput, because two runs understate noise).
"""

from __future__ import annotations

import json
import os
import threading

from tests.bench.env import SiteKey
from tests.bench.procs import CpuMeter, run_child
from tests.bench.runner import GATEWAY_PORT, Bench
from tests.bench.wrk import LoadError, LoadResult, wrk_path

STATUS_RATE = 1000.0
SCRIPT = os.path.join(os.path.dirname(__file__), "status.lua")


def _status_load(seconds: float, out: list[LoadResult | Exception]) -> None:
    """wrk (1 thread, 16 connections) paced at 1,000 GET /status per second."""
    argv = [
        wrk_path(),
        "-t1",
        "-c16",
        f"-d{max(1, round(seconds))}s",
        "--timeout=5s",
        "-s",
        SCRIPT,
        f"http://127.0.0.1:{GATEWAY_PORT}",
    ]
    env = dict(os.environ, WRK_RATE=f"{STATUS_RATE:.3f}", WRK_THREADS="1")
    try:
        run = run_child(argv, env, seconds + 40)
        line = next((ln for ln in run.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
        if line is None:
            raise LoadError(f"status wrk printed no result:\n{run.stdout}\n{run.stderr}")
        r = json.loads(line.removeprefix("WRKJSON "))
        out.append(
            LoadResult(
                duration_s=r["duration_us"] / 1e6,
                requests=r["requests"],
                failed=r["status"] + r["connect"] + r["read"] + r["write"] + r["timeout"],
                p50_ms=r["p50_us"] / 1000,
                p95_ms=r["p95_us"] / 1000,
                p99_ms=r["p99_us"] / 1000,
                max_ms=r["max_us"] / 1000,
                loadgen_cpu_s=run.cpu_s,
                batch=0,
            )
        )
    except Exception as exc:  # noqa: BLE001 - reported in the row
        out.append(exc)


def status_beside_ingest(bench: Bench, site: SiteKey) -> None:
    bench.say("scenario: 1,000 req/s of /status beside ingest load")
    gw = bench._gateway(bench.env.topic("a"))
    try:
        peak = bench.row("100-event batches")
        # half the measured peak, as the other paced rows
        rate = (peak.requests_per_s or 400) / 2 if peak else 200.0
        secs = bench.plan.seconds
        bench._load(
            GATEWAY_PORT, site.api_key, 100, "st-warm", bench.plan.warmup, [], connections=16, rate=rate
        )
        # alone, with /status, alone: the two alone runs bracket the measured one in time, so a
        # drift of the machine's load shows up as noise instead of as an effect
        alone: list[LoadResult] = []
        ours, engines = CpuMeter([gw.pid]), CpuMeter(bench.env.engine_pids())
        alone.append(
            bench._load(
                GATEWAY_PORT, site.api_key, 100, "st-alone0", secs, [ours, engines], connections=16, rate=rate
            )
        )
        status_out: list[LoadResult | Exception] = []
        # the status load starts first and ends last, so it covers the whole measured ingest run
        t = threading.Thread(target=_status_load, args=(secs + 2, status_out))
        t.start()
        threading.Event().wait(1.0)
        with_ours, with_engines = CpuMeter([gw.pid]), CpuMeter(bench.env.engine_pids())
        both = bench._load(
            GATEWAY_PORT,
            site.api_key,
            100,
            "st-with",
            secs,
            [with_ours, with_engines],
            connections=16,
            rate=rate,
        )
        t.join()
        ours, engines = CpuMeter([gw.pid]), CpuMeter(bench.env.engine_pids())
        alone.append(
            bench._load(
                GATEWAY_PORT, site.api_key, 100, "st-alone1", secs, [ours, engines], connections=16, rate=rate
            )
        )
        base = bench._http_row("ingest paced, alone (2nd run)", "baseline", alone[1], ours, engines)
        base.notes.append(
            f"1st run (before the /status run): {alone[0].requests_per_s:,.0f} req/s, p95 "
            f"{alone[0].p95_ms:.1f} ms (the two runs give the noise)"
        )
        ours, engines = with_ours, with_engines
        row = bench._http_row(
            "ingest paced + 1,000 req/s /status",
            "scenario",
            both,
            ours,
            engines,
            "ingest paced, alone (2nd run)",
            alone[1].requests_per_s,
            both.requests_per_s,
        )
        p95_hi = max(a.p95_ms for a in alone)
        p95_limit = max(p95_hi + abs(alone[0].p95_ms - alone[1].p95_ms), p95_hi * 1.10, p95_hi + 1.0)
        rps_lo = min(a.requests_per_s for a in alone)
        rps_limit = min(rps_lo - abs(alone[0].requests_per_s - alone[1].requests_per_s), rps_lo * 0.97)
        st = status_out[0] if status_out else LoadError("status load did not run")
        status_ok = isinstance(st, LoadResult) and st.failed == 0 and st.requests_per_s >= 0.95 * STATUS_RATE
        row.goal = "p95 and req/s within the alone runs' noise; /status at 1,000 req/s, no failures"
        row.goal_met = bool(status_ok and both.p95_ms <= p95_limit and both.requests_per_s >= rps_limit)
        row.notes.append(
            f"limits from the two alone runs: p95 <= {p95_limit:.1f} ms, req/s >= {rps_limit:,.0f}"
        )
        if isinstance(st, LoadResult):
            row.notes.append(
                f"/status: {st.requests_per_s:,.0f} req/s, p50 {st.p50_ms:.2f} ms, p95 "
                f"{st.p95_ms:.2f} ms, {st.failed} failed"
            )
        else:
            row.notes.append(f"/status load failed: {st}")
        bench.say(
            f"  ingest p95 {both.p95_ms:.1f} ms (limit {p95_limit:.1f}), "
            f"{both.requests_per_s:,.0f} req/s (limit {rps_limit:,.0f}); status {row.notes[-1]}"
        )
    finally:
        bench.release(gw)


def main() -> int:
    """`python -m tests.bench.status [--quick]`: this scenario alone (private bench stack), for a
    closer look than the full bench's one row. Without a measured peak it paces ingest at 200
    100-event requests/s (20,000 ev/s)."""
    import argparse
    import sys

    from tests.bench.env import BenchEnv, BenchError
    from tests.bench.runner import Plan
    from tests.bench.stats import text_table

    args = argparse.ArgumentParser(prog="python -m tests.bench.status")
    args.add_argument("--quick", action="store_true")
    quick = args.parse_args().quick
    env = BenchEnv()
    bench = Bench(env, Plan.make(quick, False))
    try:
        env.up()
        status_beside_ingest(bench, env.create_site("status"))
    except (BenchError, OSError) as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        env.down()
    print(text_table(bench.rows))
    for r in bench.rows:
        for n in r.notes:
            print(f"- {r.name}: {n}")
    return 0 if all(r.goal_met is not False for r in bench.rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
