"""`python -m tests.bench [--quick|--smoke] [--on-stack] [--json] [--out PATH] [--no-profile] [--only a,b]`
(`make bench`).

Starts a private Kafka + Postgres (free ports; `--on-stack`: the running local stack), measures the baselines
and the scenarios (tests/bench/runner.py SCENARIOS), prints the table, writes
docs/results/bench-latest.md (a quick run writes .local/bench/quick.md unless --out says otherwise;
the analysis in docs/benchmarks.md is written by hand), and stops the private stack.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import traceback
from dataclasses import asdict
from pathlib import Path

from opsmantik.devstack.stack import ROOT

from tests.bench import report
from tests.bench.env import BENCH_HOME, BenchEnv, BenchError
from tests.bench.runner import ON_REQUEST, SCENARIOS, Bench, Plan, Scenario
from tests.bench.stats import text_table


def run_one(bench: Bench, name: str, scenario: Scenario) -> None:
    """One scenario; its failure is recorded and the run goes on to the next (the exit code and the
    report say which failed), so one broken scenario never hides the others' rows."""
    started, rows = time.monotonic(), len(bench.rows)
    try:
        scenario(bench)
    except Exception as exc:  # noqa: BLE001 - any failure of a scenario is reported, not fatal
        first = (str(exc) or type(exc).__name__).strip().splitlines()
        bench.failures.append(f"{name}: {type(exc).__name__}: {first[0] if first else ''}")
        bench.say(f"FAILED {name}: {type(exc).__name__}: {exc}")
        bench.say("".join(traceback.format_exception(exc)[-3:]).rstrip())
    bench.timings[name] = time.monotonic() - started
    bench.row_counts[name] = len(bench.rows) - rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="3 s runs, fewer rows: a smoke check (< 2 min)")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="every scenario once in its smallest form, figures meaningless: proves the bench runs "
        "(tests/bench/test_bench_smoke.py)",
    )
    parser.add_argument(
        "--on-stack",
        action="store_true",
        help="on the running local stack (opsmantik stack up) with a database and topics of the "
        "bench's own, instead of a private stack; nothing on it is stopped (the smoke test's form)",
    )
    parser.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    parser.add_argument(
        "--out", type=Path, help="markdown file to write (default docs/results/bench-latest.md)"
    )
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy profiles")
    parser.add_argument(
        "--before",
        type=Path,
        help="another checkout whose gateway and worker also run (rows marked (before)), same run",
    )
    parser.add_argument("--seconds", type=int, help="length of one measured run (default 10, quick 3)")
    parser.add_argument(
        "--only",
        help="comma-separated scenario names to run ("
        + ", ".join(n for n, _, _ in SCENARIOS)
        + "); default all",
    )
    args = parser.parse_args(argv)
    only = set(args.only.split(",")) if args.only else None
    if only and only - {n for n, _, _ in SCENARIOS}:
        parser.error(f"unknown scenario(s): {', '.join(sorted(only - {n for n, _, _ in SCENARIOS}))}")

    plan = Plan.make(args.quick, False if args.no_profile else None, smoke=args.smoke)
    if args.seconds:
        plan = dataclasses.replace(plan, seconds=max(1, args.seconds))
    # Only a full run of everything replaces the tracked results file.
    out = args.out or (
        BENCH_HOME / "smoke.md"
        if args.smoke
        else BENCH_HOME / "quick.md"
        if args.quick
        else BENCH_HOME / "partial.md"
        if only
        else ROOT / "docs" / "results" / "bench-latest.md"
    )
    env = BenchEnv.on_local_stack() if args.on_stack else BenchEnv()
    bench = Bench(env, plan, before=str(args.before.resolve()) if args.before else None)
    started = time.monotonic()
    try:
        bench.say(
            f"{'the local' if env.shared else 'private'} stack on Kafka :{env.stack.kafka_port}, "
            f"Postgres :{env.stack.pg_port}; "
            f"database {env.db_name}"
        )
        env.up()
        if args.smoke and (only is None or "end-to-end" in only):
            bench.prestart()
        for name, scenario, in_quick in SCENARIOS:
            wanted = (in_quick or not args.quick or args.smoke) and (name not in ON_REQUEST or args.smoke)
            if (only is None and wanted) or (only is not None and name in only):
                run_one(bench, name, scenario)
    except (BenchError, OSError) as exc:
        bench.failures.append(f"stack: {exc}")
        bench.say(f"FAILED: {exc}")
    finally:
        env.down()
    failure = "; ".join(bench.failures) or None
    elapsed = time.monotonic() - started

    if args.json:
        print(
            json.dumps(
                {
                    "rows": [asdict(r) for r in bench.rows],
                    "seconds": elapsed,
                    "failure": failure,
                    "failures": bench.failures,
                    "scenario_seconds": bench.timings,
                    "scenario_rows": bench.row_counts,
                },
                default=str,
                indent=1,
            )
        )
    else:
        print(text_table(bench.rows))
        for f in bench.failures:
            print(f"scenario failed: {f}")
        for r in bench.rows:
            if r.goal and r.goal_met is False:
                print(f"goal not met: {r.name}: {r.goal}")
    given = argv if argv is not None else sys.argv[1:]
    command = (
        ("make bench QUICK=1" if args.quick else "make bench")
        if not given or given == ["--quick"]
        else ("python -m tests.bench " + " ".join(given))
    )
    block = report.generated(
        bench.rows, bench.profiles, command, time.strftime("%Y-%m-%d %H:%M %Z"), plan.seconds
    )
    report.write(out, block)
    print(f"wrote {out} in {elapsed:.0f} s", file=sys.stderr)
    return 1 if failure else 0


if __name__ == "__main__":
    sys.exit(main())
