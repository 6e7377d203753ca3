"""The load generator: wrk (C, its own process, 2 threads) driven by load.lua.

wrk sends closed-loop load (each connection sends its next request when the previous
answered); with `rate` load.lua paces the requests on a schedule of send slots instead.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from tests.bench.procs import run_child

SCRIPT = Path(__file__).with_name("load.lua")


class LoadError(RuntimeError):
    pass


@dataclass(frozen=True)
class LoadResult:
    duration_s: float
    requests: int
    failed: int  # non-2xx answers, socket errors and timeouts
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    loadgen_cpu_s: float  # CPU wrk itself used: shows it was not the bottleneck
    batch: int

    @property
    def ok_requests(self) -> int:
        return max(0, self.requests - self.failed)

    @property
    def events(self) -> int:
        return self.ok_requests * max(1, self.batch)

    @property
    def requests_per_s(self) -> float:
        return self.ok_requests / self.duration_s

    @property
    def events_per_s(self) -> float:
        return self.events / self.duration_s

    @property
    def loadgen_cores(self) -> float:
        return self.loadgen_cpu_s / self.duration_s


def wrk_path() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise LoadError("wrk not found: `apt-get install -y wrk` (make bench installs it)")
    return path


def run_wrk(
    url: str,
    *,
    duration_s: float,
    connections: int,
    batch: int,
    prefix: str,
    occurred_at: str,
    api_key: str = "",
    threads: int = 2,
    rate: float = 0.0,
    timeout_s: float = 5.0,
    uuid4_ids: bool = False,
    props: str = "",
) -> LoadResult:
    argv = [
        wrk_path(),
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration_s))}s",
        f"--timeout={timeout_s:g}s",
        "-s",
        str(SCRIPT),
        url,
        "--",
        str(batch),
        prefix,
        occurred_at,
        api_key,
    ]
    env = dict(os.environ, WRK_RATE=f"{rate:.3f}", WRK_THREADS=str(threads))
    if uuid4_ids:
        env["WRK_IDS"] = "uuid4"
    if props:  # "meters": the properties the meter scenarios read (load.lua)
        env["WRK_PROPS"] = props
    run = run_child(argv, env, duration_s + timeout_s + 30)
    out, err, cpu = run.stdout, run.stderr, run.cpu_s
    line = next((ln for ln in out.splitlines() if ln.startswith("WRKJSON ")), None)
    if line is None:
        raise LoadError(f"wrk printed no result (exit {run.returncode}):\n{out}\n{err}")
    r = json.loads(line.removeprefix("WRKJSON "))
    failed = r["status"] + r["connect"] + r["read"] + r["write"] + r["timeout"]
    return LoadResult(
        duration_s=r["duration_us"] / 1e6,
        requests=r["requests"],
        failed=failed,
        p50_ms=r["p50_us"] / 1000,
        p95_ms=r["p95_us"] / 1000,
        p99_ms=r["p99_us"] / 1000,
        max_ms=r["max_us"] / 1000,
        loadgen_cpu_s=cpu,
        batch=batch,
    )
