"""The bench still runs: every scenario and probe of `make bench` once, in its smallest form
(`python -m tests.bench --smoke --on-stack`: 1 s runs, one connection count, small samples, no
warm-ups, the 3-broker cluster left to `make cluster`), on the session's running local stack with a
database and topics of the bench's own: a private stack's start-up was 11-28 s of the test. A
gateway, worker or relay asked for again with the same settings is the one already running, and
broker-down points its gateway at a closed port instead of stopping the shared broker.

The figures of a smoke run mean nothing; what this checks is that no scenario fails and each adds
its rows, so a change that breaks the bench (a probe that no longer fits the worker's seams, a
moved module, a renamed query) fails `make test` instead of the next `make bench`. wrk comes from
`make test-deps` (scripts/ensure-bench.sh): missing, this fails, it does not skip.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.bench.runner import SCENARIOS
from tests.bench.wrk import wrk_path

# Scenarios that add no row unless asked: end-to-end-before runs only with --before.
ROWLESS = {"end-to-end-before"}


def test_every_scenario_runs_once() -> None:
    wrk_path()  # raises with the install command when wrk is missing
    run = subprocess.run(
        [sys.executable, "-m", "tests.bench", "--smoke", "--on-stack", "--json", "--no-profile"],
        capture_output=True,
        text=True,
        timeout=600,  # the bench bounds each step itself; this only stops a hung run
    )
    assert run.stdout.strip(), f"no report (exit {run.returncode}):\n{run.stderr[-4000:]}"
    report = json.loads(run.stdout)
    assert report["failures"] == [], "\n".join(report["failures"]) + "\n" + run.stderr[-4000:]
    assert run.returncode == 0, run.stderr[-4000:]
    ran = report["scenario_rows"]
    assert set(ran) == {name for name, _, _ in SCENARIOS}, "scenarios not run: " + ", ".join(
        sorted({name for name, _, _ in SCENARIOS} - set(ran))
    )
    rowless = sorted(name for name, n in ran.items() if n == 0 and name not in ROWLESS)
    assert rowless == [], f"scenarios that added no row: {rowless}"
