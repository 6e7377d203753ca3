"""The measurements: baselines, then the scenarios, each turned into a table row.

A measurement is a `Bench` method registered in `SCENARIOS` (at the bottom): to add one, write
the method (it appends rows to `self.rows`, asks `self.site(name)` for a site of its own and
`self.env.topic(phase)` for its own topic) and add it to the list where it should run.

Order matters: the gateway-only scenarios run before any worker exists (so the worker
never competes with them), each later phase uses its own topic (a worker never starts on
an old backlog), and the broker is stopped only after the end-to-end runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import orjson

from tests.bench import profile
from tests.bench.env import OPSMANTIK, BenchEnv, BenchError, SiteKey, Statement, wait_port, wait_until
from tests.bench.procs import CpuMeter, engine_pids, run_child
from tests.bench.stats import Row, ratio
from tests.bench.wrk import LoadResult, run_wrk
from tests.support.process import Process, free_port, stable_ports

# Free ports (the servers stop and start again on them from scenario to scenario).
BARE_PORT, GATEWAY_PORT, BEFORE_GATEWAY_PORT, DOWN_GATEWAY_PORT = stable_ports(4)
CONNECTIONS = 32
CONCURRENCY = (32, 128, 512)  # single-event runs (issue 22)
E2E_TARGET_EVENTS_S = 20_000


@dataclass(frozen=True)
class Plan:
    seconds: int  # one measured run
    warmup: int
    quick: bool
    profile: bool
    # `--smoke` (tests/bench/test_bench_smoke.py, part of `make test`): every scenario once in its
    # smallest form (1 s runs, one connection count, small samples), to prove the bench still runs;
    # its figures mean nothing.
    smoke: bool = False

    @classmethod
    def make(cls, quick: bool, profile_on: bool | None = None, smoke: bool = False) -> Plan:
        if smoke:
            return cls(seconds=1, warmup=0, quick=True, profile=False, smoke=True)
        if quick:
            return cls(seconds=3, warmup=1, quick=True, profile=bool(profile_on))
        return cls(seconds=10, warmup=2, quick=False, profile=profile_on is not False)

    def size(self, full: int, quick: int, smoke: int) -> int:
        """A sample size for this plan (messages, lines, sites)."""
        return smoke if self.smoke else quick if self.quick else full


def worker_batches(port: int) -> float:
    """opsmantik_worker_batches_total on a worker's metrics port (0 while it does not answer)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as page:
            text = page.read().decode()
    except OSError:
        return 0.0
    for line in text.splitlines():
        if line.startswith("opsmantik_worker_batches_total "):
            return float(line.split()[1])
    return 0.0


def statements_note(top: list[Statement], events: int) -> str:
    """Postgres' top statements of a run: where the engines' µs per event went."""
    parts = [
        f"`{st.label}` {st.share:.0%} ({st.calls:,} calls, {st.ms * 1000 / max(1, events):.1f} µs/ev)"
        for st in top
    ]
    return "Postgres execution time (wall, pg_stat_statements): " + "; ".join(parts)


@dataclass
class Bench:
    env: BenchEnv
    plan: Plan
    rows: list[Row] = field(default_factory=list)
    profiles: list[profile.Profile] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    occurred_at: str = field(
        default_factory=lambda: (datetime.now(UTC) - timedelta(seconds=30)).isoformat(timespec="seconds")
    )
    sites: dict[str, SiteKey] = field(default_factory=dict)
    gateway_up: Process | None = None  # the end-to-end gateway, kept for the broker-down scenario
    outbox_rows: int = 0  # what the broker-down scenario left for the drain
    failures: list[str] = field(default_factory=list)  # "scenario: reason", one per failed scenario
    timings: dict[str, float] = field(default_factory=dict)  # seconds each scenario took
    row_counts: dict[str, int] = field(default_factory=dict)  # rows each scenario added
    # `--before PATH`: another checkout (e.g. a worktree at the commit before a change) whose
    # gateway and worker the single-conc and end-to-end-before scenarios also run, in the same
    # run as this checkout's, so before/after figures share this machine's minute.
    before: str | None = None
    # --smoke: a gateway or service asked for again with the same settings is the one already
    # running (start-ups were most of the smoke's time); `release` leaves it up, env.down() stops it.
    kept: dict[tuple[str, ...], Process] = field(default_factory=dict)

    def before_env(self) -> dict[str, str]:
        # Its worker's metrics on an ephemeral port: --smoke's prestarted worker (kept) holds the
        # bench's fixed one while end-to-end-before runs.
        if not self.before:
            return {}
        return {"PYTHONPATH": f"{self.before}/services", "OPSMANTIK_WORKER_METRICS_PORT": "0"}

    def site(self, name: str) -> SiteKey:
        """A site (and API key) of the scenario's own, made on first use."""
        if name not in self.sites:
            self.sites[name] = self.env.create_site(name)
        return self.sites[name]

    def say(self, msg: str) -> None:
        line = f"[bench {time.strftime('%H:%M:%S')}] {msg}"
        self.log.append(line)
        print(line, file=sys.stderr, flush=True)

    def row(self, name: str) -> Row | None:
        return next((r for r in self.rows if r.name == name), None)

    # ------------------------------------------------------------ helpers

    def _load(
        self,
        port: int,
        key: str,
        batch: int,
        prefix: str,
        seconds: int,
        meters: list[CpuMeter],
        connections: int = CONNECTIONS,
        rate: float = 0.0,
    ) -> LoadResult:
        if seconds <= 0:  # a warm-up the plan leaves out (--smoke)
            return LoadResult(1.0, 0, 0, 0.0, 0.0, 0.0, 0.0, 0.0, batch)
        for m in meters:
            m.start()
        result = run_wrk(
            f"http://127.0.0.1:{port}",
            duration_s=seconds,
            connections=connections,
            batch=batch,
            prefix=f"{self.env.tag}-{prefix}",
            occurred_at=self.occurred_at,
            api_key=key,
            rate=rate,
        )
        for m in meters:
            m.stop()
        if result.failed:
            self.say(f"  {prefix}: {result.failed} of {result.requests} requests failed")
        self.say(
            f"  {prefix}: {result.requests_per_s:,.0f} req/s, {result.events_per_s:,.0f} ev/s, "
            f"p95 {result.p95_ms:.1f} ms, wrk used {result.loadgen_cores:.2f} core"
        )
        return result

    def _http_row(
        self,
        name: str,
        kind: str,
        r: LoadResult,
        ours: CpuMeter,
        engines: CpuMeter,
        baseline: str | None = None,
        base_value: float | None = None,
        value: float | None = None,
    ) -> Row:
        events = max(1, r.events)
        row = Row(
            name,
            kind,
            events_per_s=r.events_per_s,
            requests_per_s=r.requests_per_s,
            p50_ms=r.p50_ms,
            p95_ms=r.p95_ms,
            p99_ms=r.p99_ms,
            cpu_us_per_event=ours.used / events * 1e6,
            engine_cpu_us_per_event=engines.used / events * 1e6,
            baseline=baseline,
            ratio=ratio(value, base_value),
        )
        row.notes.append(
            f"load generator (wrk, 2 threads, {r.requests:,} requests) used "
            f"{r.loadgen_cores:.2f} of 2 cores; load average {os.getloadavg()[0]:.1f}"
        )
        if r.failed:
            row.notes.append(f"{r.failed} requests failed (non-2xx or socket errors)")
        self.rows.append(row)
        return row

    def _run_json(self, argv: list[str], timeout_s: float) -> tuple[dict[str, object], float]:
        """Run a helper process that prints one JSON line; return it and the CPU the process used."""
        run = run_child(argv, self.env.env(self.env.topic("a")), timeout_s)
        if run.returncode != 0:
            raise BenchError(f"{' '.join(argv[:3])} failed ({run.returncode}):\n{run.stdout}\n{run.stderr}")
        return orjson.loads(run.stdout.strip().splitlines()[-1]), run.cpu_s

    def _profile(self, name: str, pid: int, seconds: float) -> subprocess.Popen[bytes] | None:
        if not self.plan.profile:
            return None
        raw = self.env.logs / f"profile-{name.replace(' ', '-')}.txt"
        proc = profile.start(pid, seconds, raw)
        if proc is None:
            self.say("  py-spy not installed: no profile")
        return proc

    def _collect(self, name: str, proc: subprocess.Popen[bytes] | None) -> None:
        if proc is None:
            return
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        p = profile.summarise(name, self.env.logs / f"profile-{name.replace(' ', '-')}.txt")
        if p is not None:
            self.profiles.append(p)

    # ------------------------------------------------------------ baselines

    def bare_handler(self) -> None:
        self.say("baseline: bare aiohttp handler (orjson parse, 200), uvloop")
        argv = [sys.executable, "-m", "tests.bench.bare_server", "--port", str(BARE_PORT), "--uvloop"]
        svc = self.env.start("bare", argv, self.env.topic("a"))
        try:
            wait_port(BARE_PORT, svc)
            self._load(BARE_PORT, "", 0, "bare-warm", self.plan.warmup, [])
            ours, engines = CpuMeter([svc.pid]), CpuMeter(self.env.engine_pids())
            r = self._load(BARE_PORT, "", 0, "bare", self.plan.seconds, [ours, engines])
            self._http_row("bare handler", "baseline", r, ours, engines)
            if not self.plan.quick:
                ours, engines = CpuMeter([svc.pid]), CpuMeter(self.env.engine_pids())
                r = self._load(BARE_PORT, "", 100, "bare-batch", self.plan.seconds, [ours, engines])
                self._http_row("bare handler, 100-event batch", "baseline", r, ours, engines)
        finally:
            svc.stop()

    def raw_producer(self) -> None:
        self.say("baseline: raw confluent-kafka producer, acks=all, idempotent")
        engines = CpuMeter(self.env.engine_pids()).start()
        data, cpu = self._run_json(
            [
                sys.executable,
                "-m",
                "tests.bench.raw_producer",
                "--bootstrap",
                self.env.stack.kafka_bootstrap,
                "--topic",
                self.env.topic("raw"),
                "--seconds",
                str(self.plan.seconds),
            ],
            timeout_s=self.plan.seconds + 120,
        )
        engines.stop()
        events = max(1, int(data["events"]))  # type: ignore[call-overload]
        row = Row(
            "raw producer acks=all",
            "baseline",
            events_per_s=events / float(data["seconds"]),  # type: ignore[arg-type]
            p50_ms=data["p50_ms"],
            p95_ms=data["p95_ms"],
            p99_ms=data["p99_ms"],  # type: ignore[arg-type]
            cpu_us_per_event=cpu / events * 1e6,
            engine_cpu_us_per_event=engines.used / events * 1e6,
        )
        row.notes.append(
            "one process, one partition (one site key), librdkafka batching; latency = "
            "create time to delivery report, includes queueing behind the flood"
        )
        self.rows.append(row)
        self.say(f"  {row.events_per_s:,.0f} ev/s")

    def raw_ledger(self) -> None:
        site = self.site("ledger")
        forms = ((100, False), (2000, False), (2000, True))
        for batch, copy in (forms[0], forms[2]) if self.plan.smoke else forms:
            what = "binary COPY into the ledger table" if copy else "raw asyncpg ledger insert"
            self.say(f"baseline: {what}, {batch} rows a statement")
            engines = CpuMeter(self.env.engine_pids()).start()
            data, cpu = self._run_json(
                [
                    sys.executable,
                    "-m",
                    "tests.bench.raw_ledger",
                    "--dsn",
                    self.env.database_url,
                    "--site",
                    str(site.site_id),
                    "--batch",
                    str(batch),
                    "--seconds",
                    str(self.plan.seconds),
                    "--tag",
                    f"{self.env.tag}-raw{batch}{'c' if copy else ''}",
                    *(["--copy"] if copy else []),
                ],
                timeout_s=self.plan.seconds + 60,
            )
            engines.stop()
            events = max(1, int(data["events"]))  # type: ignore[call-overload]
            row = Row(
                f"raw COPY ×{batch}" if copy else f"raw ledger ×{batch}",
                "baseline",
                events_per_s=events / float(data["seconds"]),  # type: ignore[arg-type]
                p50_ms=data["p50_ms"],
                p95_ms=data["p95_ms"],
                p99_ms=data["p99_ms"],  # type: ignore[arg-type]
                cpu_us_per_event=cpu / events * 1e6,
                engine_cpu_us_per_event=engines.used / events * 1e6,
            )
            row.notes.append(
                "one connection, binary COPY (asyncpg copy_records_to_table) of fresh ledger rows: "
                "no conflict check, no invoice; the ceiling for ledger rows; latency = per COPY"
                if copy
                else "one connection, unnest + ON CONFLICT DO NOTHING + usage upsert in one "
                "statement (tests/bench/bench.sql); latency = per statement"
            )
            self.rows.append(row)
            self.say(f"  {row.events_per_s:,.0f} rows/s")

    # ------------------------------------------------------------ services

    def _gateway(self, topic: str, port: int = GATEWAY_PORT, **extra_env: str) -> Process:
        key = ("gateway", topic, str(port), *sorted(f"{k}={v}" for k, v in extra_env.items()))
        svc = self._kept(key)
        if svc is None:
            svc = self.env.start(
                f"gateway-{topic.split('.')[2]}-{port}",
                [*OPSMANTIK, "gateway", "--host", "127.0.0.1", "--port", str(port)],
                topic,
                **extra_env,
            )
            wait_port(port, svc)
            self._keep(key, svc)
        return svc

    def _service(self, name: str, topic: str, **extra_env: str) -> Process:
        key = (name, topic, "", *sorted(f"{k}={v}" for k, v in extra_env.items()))
        svc = self._kept(key)
        if svc is None:
            label = f"{name}-{topic.split('.')[2]}-{len(self.env.services)}"
            svc = self._keep(key, self.env.start(label, [*OPSMANTIK, name], topic, **extra_env))
        return svc

    def _kept(self, key: tuple[str, ...]) -> Process | None:
        """--smoke: the running process of these settings, if any. A gateway asked for on a port
        held by a kept gateway of other settings stops that one first (one server per port)."""
        if not self.plan.smoke:
            return None
        svc = self.kept.get(key)
        if svc is not None and svc.alive():
            return svc
        for other in [k for k in self.kept if k[0] == "gateway" and k[2] == key[2] and key[2]]:
            self.kept.pop(other).stop()
        return None

    def _keep(self, key: tuple[str, ...], svc: Process) -> Process:
        if self.plan.smoke:
            self.kept[key] = svc
        return svc

    def prestart(self) -> None:
        """--smoke: end-to-end's worker is started first, so its start-up and group join (seconds on
        a loaded machine) overlap the scenarios before it; end_to_end gets the running one (kept)."""
        self._service("worker", self.env.topic("b"))

    def release(self, svc: Process) -> None:
        """A scenario is done with a server: stopped, unless --smoke keeps it for the next one."""
        if svc not in self.kept.values():
            svc.stop()

    # ------------------------------------------------------------ scenarios: gateway alone

    def gateway_alone(self) -> None:
        """One event per request, 100-event batches, then both paced at half their peak."""
        single, batch = self.site("single"), self.site("batch")
        topic = self.env.topic("a")
        self.say("scenario: gateway alone (no worker), Kafka path")
        gw = self._gateway(topic)
        try:
            self._load(GATEWAY_PORT, single.api_key, 0, "gw-warm", self.plan.warmup, [])
            bare = self.row("bare handler")
            ours, engines = CpuMeter([gw.pid]), CpuMeter(self.env.engine_pids())
            r1 = self._load(GATEWAY_PORT, single.api_key, 0, "single", self.plan.seconds, [ours, engines])
            row = self._http_row(
                "1 event/request",
                "scenario",
                r1,
                ours,
                engines,
                "bare handler",
                bare.requests_per_s if bare else None,
                r1.requests_per_s,
            )
            # issue 10's goal (the earlier 0.60× was unreachable with linger.ms 2: docs/benchmarks.md)
            row.goal, row.goal_met = "≥ 0.40× bare req/s", row.ratio is not None and row.ratio >= 0.40

            raw = self.row("raw producer acks=all")
            ours, engines = CpuMeter([gw.pid]), CpuMeter(self.env.engine_pids())
            r100 = self._load(GATEWAY_PORT, batch.api_key, 100, "batch", self.plan.seconds, [ours, engines])
            row = self._http_row(
                "100-event batches",
                "scenario",
                r100,
                ours,
                engines,
                "raw producer acks=all",
                raw.events_per_s if raw else None,
                r100.events_per_s,
            )
            row.goal, row.goal_met = "≥ 50,000 ev/s", r100.events_per_s >= 50_000

            # Paced runs get spare connections so the send schedule, not the answers, sets the rate.
            paced = (
                ("1 event/request @ half peak", single, 0, r1, 64),
                ("100-event batches @ half peak", batch, 100, r100, 16),
            )
            for name, key, size, peak, conns in paced[:1] if self.plan.smoke else paced:
                target = peak.requests_per_s / 2
                ours, engines = CpuMeter([gw.pid]), CpuMeter(self.env.engine_pids())
                r = self._load(
                    GATEWAY_PORT,
                    key.api_key,
                    size,
                    f"half-{size}",
                    self.plan.seconds,
                    [ours, engines],
                    connections=conns,
                    rate=target,
                )
                row = self._http_row(name, "scenario", r, ours, engines)
                row.goal, row.goal_met = "p95 < 25 ms", r.p95_ms < 25
                row.notes.append(
                    f"paced on a send schedule over {conns} connections: target "
                    f"{target:,.0f} req/s, got {r.requests_per_s:,.0f}"
                )

            if self.plan.profile:
                self.say("  profiling the gateway (py-spy), outside the measured runs")
                for name, key, size in (
                    ("gateway 1 event-request", single, 0),
                    ("gateway 100-event batches", batch, 100),
                ):
                    proc = self._profile(name, gw.pid, self.plan.seconds / 2)
                    self._load(
                        GATEWAY_PORT, key.api_key, size, f"prof-{size}", round(self.plan.seconds / 2), []
                    )
                    self._collect(name, proc)
        finally:
            self.release(gw)

    # ------------------------------------------------------------ scenarios: single events at concurrency

    def single_concurrency(self) -> None:
        """Issue 22: one event per request at 32, 128 and 512 connections, each run right after
        a bare-handler run at the same connection count (both servers up, same moment), so each
        ratio is from the same minute of this shared machine. CPU per request for both."""
        site = self.site("single")
        topic = self.env.topic("a")
        self.say("scenario: single events at 32/128/512 connections vs the bare handler")
        argv = [sys.executable, "-m", "tests.bench.bare_server", "--port", str(BARE_PORT), "--uvloop"]
        bare = self.env.start("bare-conc", argv, topic)
        gw = self._gateway(topic)
        gateways = [("", gw)]
        if self.before:
            gateways.insert(0, (" (before)", self._gateway(topic, BEFORE_GATEWAY_PORT, **self.before_env())))
        try:
            wait_port(BARE_PORT, bare)
            for conns in CONCURRENCY[:1] if self.plan.smoke else CONCURRENCY:
                self._load(BARE_PORT, "", 0, f"bare-warm-{conns}", self.plan.warmup, [], connections=conns)
                ours, engines = CpuMeter([bare.pid]), CpuMeter(self.env.engine_pids())
                rb = self._load(BARE_PORT, "", 0, f"bare-{conns}", self.plan.seconds, [ours, engines], conns)
                self._http_row(f"bare handler, {conns} conns", "baseline", rb, ours, engines)
                for label, g in gateways:
                    port = BEFORE_GATEWAY_PORT if label else GATEWAY_PORT
                    self._load(
                        port, site.api_key, 0, f"gw-warm-{conns}{label[2:3]}", self.plan.warmup, [], conns
                    )
                    ours, engines = CpuMeter([g.pid]), CpuMeter(self.env.engine_pids())
                    r = self._load(
                        port,
                        site.api_key,
                        0,
                        f"single-{conns}{label[2:3]}",
                        self.plan.seconds,
                        [ours, engines],
                        conns,
                    )
                    row = self._http_row(
                        f"1 event/request, {conns} conns{label}",
                        "scenario",
                        r,
                        ours,
                        engines,
                        f"bare handler, {conns} conns",
                        rb.requests_per_s,
                        r.requests_per_s,
                    )
                    if label:
                        row.notes.append(f"the gateway of {self.before} (PYTHONPATH), same topic and stack")
                    if conns == 128 and not label:
                        # issue 28's goal (0.60× its stretch); its CPU line is in docs/benchmarks.md
                        row.goal = "≥ 0.50× bare req/s, p99 < 50 ms"
                        row.goal_met = row.ratio is not None and row.ratio >= 0.50 and r.p99_ms < 50
            if self.plan.profile:
                self.say("  profiling the gateway at 128 connections (py-spy), outside the measured runs")
                name = "gateway 1 event-request 128 conns"
                proc = self._profile(name, gw.pid, self.plan.seconds / 2)
                self._load(GATEWAY_PORT, site.api_key, 0, "prof-128", round(self.plan.seconds / 2), [], 128)
                self._collect(name, proc)
        finally:
            for _, g in gateways:
                self.release(g)
            bare.stop()

    # ------------------------------------------------------------ scenarios: end to end

    def end_to_end_before(self) -> None:
        """end_to_end with the gateway and worker of `--before`'s checkout (rows "(before)")."""
        if self.before:
            self.end_to_end(label=" (before)", phase="b0", **self.before_env())

    def end_to_end_two_workers(self) -> None:
        """end_to_end with two worker processes in one group, the topic's partitions split between
        them (docs/scaling.md): one process's ledger loop spends its own CPU on a batch, then
        waits for Postgres' statements; two overlap the one with the other."""
        self.end_to_end(label=" (2 workers)", phase="b2", workers=2)

    def end_to_end(self, label: str = "", phase: str = "b", workers: int = 1, **extra_env: str) -> None:
        """Gateway + worker: events until site_usage_monthly shows everything sent, and the
        freshness lag (ledgered_at - received_at) of each event. Leaves the gateway up for
        broker_down (self.gateway_up) when it is this checkout's one-worker run."""
        tag = label.strip(" ()").replace(" ", "-")
        before = "PYTHONPATH" in extra_env
        paced, flood = self.site("paced" + tag), self.site("flood" + tag)
        probe = self.site("probe" + tag)
        topic = self.env.topic(phase)
        self.say(f"scenario: end to end (gateway + worker){label}")
        # Several workers: a metrics port each (the smoke's end-to-end worker holds the bench's own).
        ports = [free_port() for _ in range(workers)] if workers > 1 else [self.env.metrics_ports[0]]
        pool = [
            self._service(
                "worker",
                topic,
                **extra_env,
                **({"OPSMANTIK_WORKER_METRICS_PORT": str(p)} if workers > 1 else {}),
            )
            for p in ports
        ]
        worker = pool[0]
        gw = self._gateway(topic, **extra_env)

        # Warm-up: every worker has joined the group once each has committed a batch of the probe's.
        def joined() -> bool:
            self._load(GATEWAY_PORT, probe.api_key, 100, "e2e-warm", 1, [], connections=2, rate=20)
            return all(worker_batches(p) > 0 for p in ports)

        ok, _ = wait_until(joined, 90, 0.2)
        if not ok:
            raise BenchError(f"a worker ledgered nothing within 90 s:\n{worker.tail()}")
        base = self.row("raw COPY ×2000") or self.row("raw ledger ×2000")
        runs = [
            (f"end-to-end paced 20k ev/s{label}", f"e2e-paced{tag}", paced, 64, E2E_TARGET_EVENTS_S / 100)
        ]
        if not self.plan.quick:
            runs.append((f"end-to-end flood{label}", f"e2e-flood{tag}", flood, CONNECTIONS, 0.0))
        for name, prefix, site, conns, rate in runs:
            ours, engines = CpuMeter([gw.pid, *(w.pid for w in pool)]), CpuMeter(self.env.engine_pids())
            worker_cpu = CpuMeter([w.pid for w in pool])
            # The engines one by one: which of them a change of SQL or of topics moved.
            kafka_cpu = CpuMeter(engine_pids(self.env.stack.kafka_pid(), None))
            pg_cpu = CpuMeter(engine_pids(None, self.env.stack.pg_pid()))
            meters = (ours, engines, worker_cpu, kafka_cpu, pg_cpu)
            statements = self.env.statements_reset()
            for m in meters:
                m.start()
            t0 = time.monotonic()
            prof = self._profile("worker " + name, worker.pid, self.plan.seconds) if "flood" in name else None
            r = run_wrk(
                f"http://127.0.0.1:{GATEWAY_PORT}",
                duration_s=self.plan.seconds,
                connections=conns,
                batch=100,
                prefix=f"{self.env.tag}-{prefix}",
                occurred_at=self.occurred_at,
                api_key=site.api_key,
                rate=rate,
            )
            sent = r.events
            # Requests the gateway answered from the outbox (its delivery deadline passed, e.g. on
            # a machine loaded by others) reach the ledger only through the relay, which is not
            # running here: wait for the rest, and say how many. Every answer is in, so the count
            # is final; counted once, as a poll of it would be the engines' CPU.
            outboxed = self.env.value("outbox_count", site.site_id)
            ok, t_all = wait_until(
                lambda s=site, n=sent - outboxed: self.env.value("usage_events", s.site_id) >= n,
                60 if self.plan.quick else 180,
                0.05,
            )
            for m in meters:
                m.stop()
            self._collect("worker " + name, prof)
            fresh = self.env.query("freshness_ms", site.site_id)
            shown = self.env.value("usage_events", site.site_id)
            row = self._http_row(
                name,
                "scenario",
                r,
                ours,
                engines,
                base.name if base else None,
                base.events_per_s if base else None,
                None,
            )
            row.events_per_s = shown / (t_all - t0)
            row.ratio = ratio(row.events_per_s, base.events_per_s if base else None)
            if fresh is not None and fresh["n"]:
                row.fresh_p50_ms, row.fresh_p99_ms = float(fresh["p50"]), float(fresh["p99"])
            row.notes.append(
                f"{sent:,} events acknowledged in {r.duration_s:.1f} s "
                f"({r.events_per_s:,.0f} ev/s offered); the invoice showed {shown:,} "
                f"{t_all - t0:.1f} s after the first request"
                + ("" if ok else " (TIMED OUT)")
                + (
                    f"; {outboxed:,} answered from the outbox (deadline missed), not waited for"
                    if outboxed
                    else ""
                )
            )
            worker_us = worker_cpu.used / max(1, shown) * 1e6
            gateway_us = (ours.used - worker_cpu.used) / max(1, sent) * 1e6
            row.notes.append(
                f"worker alone {worker_us:.1f} µs of CPU per event, gateway {gateway_us:.1f}; "
                f"engines: Kafka {kafka_cpu.used / max(1, shown) * 1e6:.1f}, "
                f"Postgres {pg_cpu.used / max(1, shown) * 1e6:.1f}"
            )
            if statements:
                row.notes.append(statements_note(self.env.statements(), shown))
            if before:
                row.notes.append(f"gateway and worker of {self.before} (PYTHONPATH)")
            if workers > 1:
                row.notes.append(f"{workers} worker processes in one group (worker CPU: all of them)")
            if "paced" in name and not before:
                row.goal = "≥ 20,000 ev/s, fresh p99 < 1 s"
                row.goal_met = bool(ok and row.events_per_s >= 20_000 and (row.fresh_p99_ms or 1e9) < 1000)
            # The worker's own CPU per event (its process tree, /proc utime + stime over the run),
            # as a row of its own: the issue-22 goal, against the raw COPY's client CPU per row.
            wrow = Row(
                f"worker CPU, {name}",
                "scenario",
                events_per_s=row.events_per_s,
                cpu_us_per_event=worker_us,
                baseline=base.name if base else None,
                ratio=ratio(worker_us, base.cpu_us_per_event if base else None),
                goal="" if before else "≤ 20 µs/ev",
                goal_met=None if before else worker_us <= 20,
            )
            wrow.notes.append(
                f"the worker process tree's utime + stime over the run ÷ the {shown:,} events the "
                f"invoice showed (gateway {gateway_us:.1f} µs/ev); vs baseline = CPU ÷ the raw "
                "COPY client's CPU per row"
            )
            self.rows.append(wrow)
            self.say(
                f"  {name}: {row.events_per_s:,.0f} ev/s end to end, freshness p99 "
                f"{row.fresh_p99_ms or 0:,.0f} ms"
            )
        for w in pool:
            self.release(w)
        if label:
            self.release(gw)
        else:
            self.gateway_up = gw

    # ------------------------------------------------------------ scenarios: broker down, drain

    def broker_down(self) -> None:
        """Kafka stopped: the gateway (end_to_end's) acknowledges from the Postgres outbox. On the
        shared stack (--on-stack) the broker is never stopped: a gateway whose bootstrap is a
        closed port sees the same thing (no broker answers), and the drain needs no restart."""
        gw, site, port = self.gateway_up, self.site("down"), GATEWAY_PORT
        if self.env.shared:
            self.say("scenario: broker down (outbox path), a gateway whose broker is a closed port")
            if gw is not None:
                self.release(gw)
            port = DOWN_GATEWAY_PORT
            dead = f"127.0.0.1:{free_port()}"
            gw = self._gateway(self.env.topic("b"), port, OPSMANTIK_KAFKA_BOOTSTRAP=dead)
        elif gw is None:
            raise BenchError("broker_down needs end_to_end's gateway")
        else:
            self.say("scenario: broker down (outbox path)")
            self.env.stack.kafka_down()
        self._load(port, site.api_key, 100, "down-warm", self.plan.warmup, [])  # breaker opens
        base = self.row("raw ledger ×100")
        ours, engines = CpuMeter([gw.pid]), CpuMeter(self.env.engine_pids())
        r = self._load(port, site.api_key, 100, "down", self.plan.seconds, [ours, engines])
        row = self._http_row(
            "broker down: outbox, 100-event batches",
            "scenario",
            r,
            ours,
            engines,
            "raw ledger ×100",
            base.events_per_s if base else None,
            r.events_per_s,
        )
        row.goal, row.goal_met = "≥ 10,000 ev/s", r.events_per_s >= 10_000
        in_outbox = self.env.value("outbox_count", site.site_id)
        row.notes.append(f"outbox holds {in_outbox:,} rows of this site (warm-up included)")
        if in_outbox == 0:
            raise BenchError(f"broker down: no request went to the outbox ({r.failed} failed)")
        gw.stop()
        self.gateway_up = None
        self.outbox_rows = self.env.value("outbox_total")

    def drain(self) -> None:
        queued = self.outbox_rows
        self.say(f"scenario: outbox drain after recovery ({queued:,} rows)")
        if not self.env.shared:
            self.env.stack.kafka_up()
        topic = self.env.topic("b")
        relay = self._service("relay", topic)
        base = self.row("raw producer acks=all")
        ours, engines = CpuMeter([relay.pid]), CpuMeter(self.env.engine_pids())
        for m in (ours, engines):
            m.start()
        t_start = time.monotonic()
        last_full, left = t_start, queued
        prof = self._profile("relay drain", relay.pid, self.plan.seconds)
        deadline = t_start + (60 if self.plan.quick else 240)
        while left > 0 and time.monotonic() < deadline and relay.alive():
            left = self.env.value("outbox_total")
            if left >= queued:
                last_full = time.monotonic()  # the relay has not started draining yet
            time.sleep(0.05)
        t_end = time.monotonic()
        for m in (ours, engines):
            m.stop()
        self._collect("relay drain", prof)
        drained = queued - left
        row = Row(
            "outbox drain (relay)",
            "scenario",
            events_per_s=drained / max(1e-3, t_end - last_full),
            cpu_us_per_event=ours.used / max(1, drained) * 1e6,
            engine_cpu_us_per_event=engines.used / max(1, drained) * 1e6,
            baseline="raw producer acks=all",
        )
        row.ratio = ratio(row.events_per_s, base.events_per_s if base else None)
        row.goal, row.goal_met = "≥ 20,000 ev/s", left == 0 and row.events_per_s >= 20_000
        row.notes.append(
            f"{drained:,} of {queued:,} rows drained in {t_end - last_full:.1f} s from the "
            f"first row gone ({t_end - t_start:.1f} s including relay start-up)"
            + ("" if relay.alive() else f"; relay exited: {relay.tail(5)}")
        )
        self.rows.append(row)
        self.say(f"  {row.events_per_s:,.0f} ev/s drained")
        self.release(relay)

    # ------------------------------------------------------------ consumer probes

    def consumer_probes(self) -> None:
        """What reading the ingest topic costs: aiokafka's getmany (the client under Faust), the
        worker's Faust app with its batch hand-off (BatchConsumer, handle() a no-op) and stock
        Faust per message (the worker's previous agent), on the same pre-produced messages."""
        n = self.plan.size(200_000, 50_000, 2_000)
        topic = self.env.topic("c")
        self.say(f"consumer probes: {n:,} event.v1 messages in one partition")
        argv = [sys.executable, "-m", "tests.bench.consume_probe"]
        common = ["--bootstrap", self.env.stack.kafka_bootstrap, "--topic", topic, "--messages", str(n)]
        self._run_json([*argv, "produce", *common], timeout_s=300)
        results: dict[str, Row] = {}
        for mode, name, kind in (
            ("getmany", "raw aiokafka getmany", "baseline"),
            ("faust-batch", "Faust batch hand-off (worker app, no-op)", "scenario"),
            ("faust-stream", "stock Faust per message (noack_take + ack)", "baseline"),
        ):
            # A smoke run's 2,000 messages take seconds: a probe that stalls (e.g. the worker's
            # seams changed under it) fails the scenario in 30 s instead of holding the run 5 min.
            wait_s = 30 if self.plan.smoke else 300
            data, _ = self._run_json([*argv, mode, *common, "--timeout", str(wait_s)], timeout_s=wait_s + 100)
            msgs = max(1, int(data["messages"]))  # type: ignore[call-overload]
            row = Row(
                name,
                kind,
                events_per_s=msgs / max(1e-6, float(data["seconds"])),  # type: ignore[arg-type]
                cpu_us_per_event=float(data["cpu_s"]) / msgs * 1e6,
            )  # type: ignore[arg-type]
            row.notes.append(
                f"{msgs:,} messages, one partition, uvloop; CPU = the consumer process from its "
                "first message to its last (start-up and group join not counted)"
            )
            results[mode] = row
            self.rows.append(row)
            self.say(f"  {name}: {row.events_per_s:,.0f} msg/s, {row.cpu_us_per_event:.1f} µs/msg")
        batch, raw, stock = results["faust-batch"], results["getmany"], results["faust-stream"]
        batch.baseline = "raw aiokafka getmany"
        batch.ratio = ratio(batch.cpu_us_per_event, raw.cpu_us_per_event)
        batch.notes.append(
            "vs baseline = CPU per message ÷ getmany's; stock Faust per message: "
            f"{ratio(stock.cpu_us_per_event, raw.cpu_us_per_event) or 0:.1f}× getmany's"
        )


Scenario = Callable[[Bench], None]


def client(bench: Bench) -> None:
    """`opsmantik send` against the gateway (tests/bench/client.py, which imports this module)."""
    from tests.bench import client as client_bench

    client_bench.run(bench, bench.site("client"))


def status_page(bench: Bench) -> None:
    """The status page's cost beside ingest (tests/bench/status.py, which imports this module)."""
    from tests.bench import status

    status.status_beside_ingest(bench, bench.site("status"))


def key_flood(bench: Bench) -> None:
    """A forged-key flood's cost to a site's p95 on the same gateway (tests/bench/key_flood.py)."""
    from tests.bench import key_flood as flood

    flood.run(bench, bench.site("key-flood"))


def ledger_growth(bench: Bench) -> None:
    """A hot site's ledger at 0, 10M and 50M rows (tests/bench/ledger_growth.py, docs/scaling.md)."""
    from tests.bench import ledger_growth as growth

    growth.ledger_growth(bench)


def tenants(bench: Bench) -> None:
    """The gateway with 0, 10,000 and 100,000 idle sites in the database (tests/bench/tenants.py)."""
    from tests.bench import tenants as many

    many.tenants(bench)


def scale_out(bench: Bench) -> None:
    """3 brokers and 2 gateway processes (tests/bench/cluster.py, docs/scaling.md)."""
    from tests.bench import cluster

    cluster.run(bench, bench.site("single"), bench.site("batch"))


def alerts_delivery(bench: Bench) -> None:
    """Usage alerts: crossing → webhook delivery at 20k ev/s (tests/bench/alerts.py, issue 27)."""
    from tests.bench import alerts

    alerts.delivery(bench)


def alerts_rules_cost(bench: Bench) -> None:
    """Usage alerts: ingest p95 and worker CPU/ev with 100 rules vs none (tests/bench/alerts.py)."""
    from tests.bench import alerts

    alerts.rules_cost(bench)


def meters_worker_cost(bench: Bench) -> None:
    """Meters: the worker's CPU per event with 5 meters vs none, same run (tests/bench/meters.py)."""
    from tests.bench import meters

    meters.worker_cost(bench)


def meters_freshness(bench: Bench) -> None:
    """Meters: accept → visible in a meter's query at 20,000 ev/s offered (tests/bench/meters.py)."""
    from tests.bench import meters

    meters.freshness(bench)


def meters_query(bench: Bench) -> None:
    """Meters: query p99 on a 10M-event site-month written as bucket rows (tests/bench/meters.py)."""
    from tests.bench import meters

    meters.query(bench)


def meters_lookup(bench: Bench) -> None:
    """GET /api/v1/events/{id} on a 50M-row ledger (tests/bench/meters.py); --only meters-lookup."""
    from tests.bench import meters

    meters.lookup(bench)


# Scenarios a run without --only leaves out (its data takes many minutes to make); --smoke runs them.
ON_REQUEST = {"meters-lookup"}

# What `make bench` runs, in this order (see the module doc). (name, method, in quick runs too)
SCENARIOS: list[tuple[str, Scenario, bool]] = [
    ("bare", Bench.bare_handler, True),
    ("raw-producer", Bench.raw_producer, True),
    ("raw-ledger", Bench.raw_ledger, True),
    ("consumer-probes", Bench.consumer_probes, True),
    ("gateway", Bench.gateway_alone, True),
    ("single-conc", Bench.single_concurrency, True),
    ("client", client, True),
    ("status", status_page, True),
    ("key-flood", key_flood, True),
    ("end-to-end-before", Bench.end_to_end_before, True),  # only with --before
    ("end-to-end-2w", Bench.end_to_end_two_workers, False),  # before end-to-end: its gateway stays up
    ("end-to-end", Bench.end_to_end, True),
    ("broker-down", Bench.broker_down, True),
    ("drain", Bench.drain, True),
    ("scale-out", scale_out, True),
    ("alerts-delivery", alerts_delivery, True),
    ("alerts-rules-cost", alerts_rules_cost, True),
    ("meters-worker-cost", meters_worker_cost, True),
    ("meters-freshness", meters_freshness, True),
    ("meters-query", meters_query, False),  # minutes writing a 10M-event month
    ("meters-lookup", meters_lookup, False),  # ON_REQUEST: --only meters-lookup (a 50M-row ledger)
    ("ledger-growth", ledger_growth, False),  # minutes of COPY: --only ledger-growth (docs/benchmarks.md)
    ("tenants", tenants, True),  # last: the idle sites it adds stay in the database
]
