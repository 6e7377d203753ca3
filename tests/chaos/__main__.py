"""`python -m tests.chaos [--long] [--scenario N ...] [--seed S] [--json]`

Short form (default, what CI runs): scenarios 1, 4, 5, 6 once each.
Long form (--long): all eleven, three runs each, seeds S, S+1, S+2.
Exit status 1 when any run failed (lost, invented or duplicated events, drift, ...).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from pathlib import Path

from tests.chaos import report
from tests.chaos.harness import CHAOS_HOME, ChaosStack
from tests.chaos.scenarios import CI_SUBSET, SCENARIOS, Profile, RunResult, run_scenario


async def run_all(
    numbers: list[int], seeds: list[int], profile: Profile, workroot: Path, keep_stack: bool, progress: bool
) -> list[RunResult]:
    engines = ChaosStack()
    await asyncio.to_thread(engines.up)
    if progress:
        s = engines.stack
        print(f"chaos: private stack Kafka {s.kafka_bootstrap}, {s.database_url} ({s.home})", file=sys.stderr)
    results: list[RunResult] = []
    try:
        for seed in seeds:
            for n in numbers:
                t0 = time.monotonic()
                r = await run_scenario(engines, SCENARIOS[n], seed, profile, workroot)
                results.append(r)
                if progress:
                    print(
                        f"[{time.monotonic() - t0:5.0f} s] " + " | ".join(report.row(r)),
                        file=sys.stderr,
                        flush=True,
                    )
                    if r.failures:
                        print("   " + "\n   ".join(r.failures), file=sys.stderr, flush=True)
    finally:
        if not keep_stack:
            await asyncio.to_thread(engines.down)
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m tests.chaos",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--long", action="store_true", help="every scenario, three seeds each")
    p.add_argument("--scenario", type=int, nargs="+", choices=sorted(SCENARIOS))
    p.add_argument("--seed", type=int, help="base seed (default: random, printed)")
    p.add_argument("--runs", type=int, help="runs per scenario (default 1 short, 3 long)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--keep-stack", action="store_true", help="leave the private engines running")
    args = p.parse_args(argv)

    numbers = args.scenario or (sorted(SCENARIOS) if args.long else list(CI_SUBSET))
    runs = args.runs or (3 if args.long else 1)
    base = args.seed if args.seed is not None else random.randrange(1, 100_000)
    seeds = [base + i for i in range(runs)]
    print(f"chaos: scenarios {numbers}, seeds {seeds}", file=sys.stderr, flush=True)
    results = asyncio.run(
        run_all(numbers, seeds, Profile(), CHAOS_HOME / "runs", args.keep_stack, progress=True)
    )
    if args.json:
        print(json.dumps([report.as_json(r) for r in results], indent=1))
    else:
        print(report.markdown(results))
        detail = report.failures(results)
        if detail:
            print("\n" + detail)
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
