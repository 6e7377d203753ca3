"""`python -m tests.bench [--quick] [--json] [--out PATH] [--no-profile]` (what `make bench` runs).

Starts a private Kafka + Postgres (ports 24xxx under .local/bench), measures the baselines
and the scenarios, prints the table, writes docs/benchmarks.md (a quick run writes
.local/bench/quick.md unless --out says otherwise), and stops the private stack.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

from services.stack import ROOT
from tests.bench import client as client_bench
from tests.bench import cluster, report, status
from tests.bench.env import BENCH_HOME, BenchEnv, BenchError
from tests.bench.runner import Bench, Plan
from tests.bench.stats import text_table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="3 s runs, fewer rows: a smoke check (< 2 min)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    parser.add_argument("--out", type=Path, help="markdown file to write (default docs/benchmarks.md)")
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy profiles")
    args = parser.parse_args(argv)

    plan = Plan.make(args.quick, False if args.no_profile else None)
    out = args.out or (BENCH_HOME / "quick.md" if args.quick else ROOT / "docs" / "benchmarks.md")
    env = BenchEnv()
    bench = Bench(env, plan)
    started = time.monotonic()
    failure: str | None = None
    try:
        bench.say(f"private stack on Kafka :{env.stack.kafka_port}, Postgres :{env.stack.pg_port}; "
                  f"database {env.db_name}")
        env.up()
        names = ["ledger", "single", "batch", "paced", "flood", "probe", "down", "client"]
        sites = {n: env.create_site(n) for n in names}
        bench.bare_handler()
        bench.raw_producer()
        bench.raw_ledger(sites["ledger"])
        bench.gateway_alone(sites["single"], sites["batch"])
        client_bench.run(bench, sites["client"])
        status.status_beside_ingest(bench, env.create_site("status"))
        gw = bench.end_to_end(sites["paced"], sites["flood"], sites["probe"])
        bench.drain(bench.broker_down(gw, sites["down"]))
        cluster.run(bench, sites["single"], sites["batch"])  # 3 brokers, 2 gateways (docs/scaling.md)
    except (BenchError, OSError) as exc:
        failure = str(exc)
        bench.say(f"FAILED: {exc}")
    finally:
        env.down()
    elapsed = time.monotonic() - started

    if args.json:
        print(json.dumps({"rows": [asdict(r) for r in bench.rows], "seconds": elapsed, "failure": failure},
                         default=str, indent=1))
    else:
        print(text_table(bench.rows))
        for r in bench.rows:
            if r.goal and r.goal_met is False:
                print(f"goal not met: {r.name}: {r.goal}")
    command = "make bench QUICK=1" if args.quick else "make bench"
    block = report.generated(bench.rows, bench.profiles, command, time.strftime("%Y-%m-%d %H:%M %Z"),
                             plan.seconds)
    report.write(out, block)
    print(f"wrote {out} in {elapsed:.0f} s", file=sys.stderr)
    return 1 if failure else 0


if __name__ == "__main__":
    sys.exit(main())
