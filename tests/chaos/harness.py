"""A private stack (Kafka + Postgres on free ports, tests/support/stacks.py) and the pipeline's
components as real processes (gateway, worker, relay; tests/support/process.py), with the faults
the scenarios inject.

One `ChaosStack` serves a whole run; each scenario gets a fresh `Pipeline`: its own database,
topics and consumer group, so scenarios never see each other's events. Components run under a
tiny supervisor that restarts a process that died on its own (what systemd's Restart=always
does in production) and counts those crashes, so a fault that crashes a component is reported
rather than silently ending the scenario.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
from opsmantik.devstack.stack import ROOT, _pid_alive, _wait_port_free

from tests.support.process import OPSMANTIK, Process, stable_ports
from tests.support.stacks import new_stack, remove

CHAOS_HOME = ROOT / ".local" / "chaos"  # the runs' logs; the engines' state lives in a fresh dir
STOP_TIMEOUT_S = 10.0
RESTART_BACKOFF_S = 2.0


class HarnessError(RuntimeError):
    pass


class ChaosStack:
    """The engines, shared by the scenarios of one run; faults act on them by pid."""

    def __init__(self) -> None:
        self.stack = new_stack("chaos")

    def up(self) -> None:
        self.stack.up()

    def down(self) -> None:
        self.stack.down()
        remove(self.stack)

    # Faults. Each blocks (subprocess, sleeps): call them through asyncio.to_thread.
    def kill_kafka(self) -> None:
        pid = self.stack.kafka_pid()
        if pid:
            _signal(pid, signal.SIGKILL)
            _wait_dead(pid, STOP_TIMEOUT_S)
            # A JVM's leader thread turns zombie before its other threads have closed the
            # sockets: wait for the port too, or a quick restart finds it "taken".
            _wait_port_free(self.stack.kafka_port, STOP_TIMEOUT_S)

    def stop_kafka(self) -> None:
        pid = self.stack.kafka_pid()
        if pid:
            _signal(pid, signal.SIGSTOP)

    def cont_kafka(self) -> None:
        pid = self.stack.kafka_pid()
        if pid:
            _signal(pid, signal.SIGCONT)

    def start_kafka(self) -> None:
        self.stack.kafka_up()

    def stop_pg(self) -> None:
        self.stack.pg_down()

    def start_pg(self) -> None:
        self.stack.pg_up()

    def pg_pids(self) -> list[int]:
        """The postmaster and every process it forked (backends, checkpointer, walwriter...)."""
        root = self.stack.pg_pid()
        if root is None or not _pid_alive(root):
            return []
        pids = [root]
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[1]) == root:
                pids.append(int(stat.parent.name))
        return pids

    def freeze_pg(self) -> list[int]:
        """SIGSTOP the whole server: connections stay open, nothing answers (a hung host)."""
        pids = self.pg_pids()
        for pid in pids:
            _signal(pid, signal.SIGSTOP)
        return pids

    def thaw_pg(self, pids: list[int]) -> None:
        for pid in pids:
            _signal(pid, signal.SIGCONT)

    def kill_pg(self, pids: list[int] | None = None) -> None:
        """SIGKILL the whole server (a stopped process dies too); the next start does crash recovery."""
        pids = pids if pids is not None else self.pg_pids()
        for pid in pids:
            _signal(pid, signal.SIGKILL)
        for pid in pids:
            _wait_dead(pid, STOP_TIMEOUT_S)
        _wait_port_free(self.stack.pg_port, STOP_TIMEOUT_S)


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _wait_dead(pid: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # the broker is our child when this run started it: reap it
        if not _pid_alive(pid):  # gone, or a zombie
            return
        time.sleep(0.05)


@dataclass
class Component:
    """`opsmantik <kind> [args]` under a tiny supervisor: the Process, plus the crash accounting."""

    kind: str  # gateway | worker | relay | audit
    index: int
    args: list[str]
    env: dict[str, str]
    workdir: Path  # cwd too: Faust keeps its data dir in the working directory
    port: int = 0  # a gateway's
    crashes: int = 0  # exits the harness did not cause
    kills: int = 0
    started_at: float = 0.0
    exit_codes: list[int] = field(default_factory=list)  # of the crashes (-6 = SIGABRT)
    _expect_exit: bool = False
    process: Process = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.process = Process.opsmantik(self.name, [self.kind, *self.args], self.env, self.workdir)

    @property
    def name(self) -> str:
        return f"{self.kind}{self.index}"

    @property
    def log(self) -> Path:
        return self.process.log

    def start(self) -> None:
        self.process.start()
        self._expect_exit = False
        self.started_at = time.monotonic()

    def alive(self) -> bool:
        return self.process.alive()

    def kill(self) -> None:
        """SIGKILL the process (the fault); the supervisor does not restart it."""
        if self.alive():
            self._expect_exit = True
            self.kills += 1
            self.process.kill()

    def stop(self) -> None:
        if self.alive():
            self._expect_exit = True
            self.process.stop(STOP_TIMEOUT_S)

    def supervise(self) -> bool:
        """Restart a process that died on its own; True when it did."""
        code = self.process.returncode
        if code is None or self._expect_exit:
            return False
        if time.monotonic() - self.started_at < RESTART_BACKOFF_S:
            return False  # a crash loop must not eat the CPU the pipeline needs
        self.crashes += 1
        self.exit_codes.append(code)
        self.start()
        return True

    def log_tail(self, lines: int = 20) -> str:
        return self.process.tail(lines)


@dataclass
class Site:
    site_id: str
    api_key: str


@dataclass
class Pipeline:
    """One scenario's database, topics and components on the shared engines."""

    engines: ChaosStack
    name: str
    workdir: Path
    gateways: list[Component] = field(default_factory=list)
    workers: list[Component] = field(default_factory=list)
    relays: list[Component] = field(default_factory=list)
    audits: list[Component] = field(default_factory=list)  # `opsmantik audit --follow`, under the faults too

    @property
    def database(self) -> str:
        return f"chaos_{self.name}"

    @property
    def database_url(self) -> str:
        return self.engines.stack.database_url.rsplit("/", 1)[0] + "/" + self.database

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPSMANTIK_")}
        env.update(
            {
                "OPSMANTIK_DATABASE_URL": self.database_url,
                "OPSMANTIK_KAFKA_BOOTSTRAP": self.engines.stack.kafka_bootstrap,
                "OPSMANTIK_TOPIC": f"chaos.{self.name}.ingest.v1",
                "OPSMANTIK_BILLABLE_TOPIC": f"chaos.{self.name}.billable.v1",
                "OPSMANTIK_WORKER_GROUP": f"chaos-{self.name}-worker",
                "PYTHONUNBUFFERED": "1",
            }
        )
        return env

    @property
    def components(self) -> list[Component]:
        return [*self.gateways, *self.workers, *self.relays, *self.audits]

    @property
    def gateway_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{g.port}" for g in self.gateways]

    def opsmantik(self, *args: str, timeout_s: float = 120.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [OPSMANTIK, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            stdin=subprocess.DEVNULL,
        )

    async def create(self) -> Site:
        """Fresh database, migrations, topics and one site."""
        admin = await asyncpg.connect(self.engines.stack.database_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
            await admin.execute(f'CREATE DATABASE "{self.database}"')
        finally:
            await admin.close()
        # The same scenario and seed again (`SEED=` to reproduce): the topics still hold the last
        # run's messages, which the audit would count as unaccounted (the database is new).
        await asyncio.to_thread(self._delete_topics)
        done = await asyncio.to_thread(self.opsmantik, "migrate")
        if done.returncode != 0:
            raise HarnessError(f"migrate failed: {done.stdout}{done.stderr}")
        # Rate and burst far above the load: 429s here would be rate-limit noise, not faults.
        made = await asyncio.to_thread(
            self.opsmantik,
            "sites",
            "create",
            f"chaos-{self.name}",
            "--rate",
            "100000",
            "--burst",
            "100000",
            "--json",
        )
        if made.returncode != 0:
            raise HarnessError(f"sites create failed: {made.stdout}{made.stderr}")
        info = json.loads(made.stdout.strip().splitlines()[-1])
        return Site(info["site_id"], info["api_key"])

    def _delete_topics(self) -> None:
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.engines.stack.kafka_bootstrap})
        names = [self.env["OPSMANTIK_TOPIC"], self.env["OPSMANTIK_BILLABLE_TOPIC"]]
        doomed = [n for n in names if n in admin.list_topics(timeout=10).topics]
        if not doomed:
            return
        for future in admin.delete_topics(doomed, operation_timeout=30).values():
            future.result()
        deadline = time.monotonic() + 30
        while any(n in admin.list_topics(timeout=10).topics for n in doomed):
            if time.monotonic() > deadline:
                raise HarnessError(f"topics {doomed} still there 30 s after their deletion")
            time.sleep(0.2)
        time.sleep(1.0)  # the controller may still be finishing the deletion: let `migrate` recreate

    def start(self, gateways: int = 1, workers: int = 1, relays: int = 1) -> None:
        # Free ports, each component's own, kept across its restarts.
        ports = stable_ports(gateways + workers + relays)
        for i in range(gateways):
            port = ports.pop()
            args = ["--host", "127.0.0.1", "--port", str(port)]
            self.gateways.append(Component("gateway", i, args, self.env, self.workdir / f"gateway{i}", port))
        for i in range(workers):
            env = {**self.env, "OPSMANTIK_WORKER_METRICS_PORT": str(ports.pop())}
            self.workers.append(Component("worker", i, [], env, self.workdir / f"worker{i}"))
        for i in range(relays):
            env = {**self.env, "OPSMANTIK_RELAY_METRICS_PORT": str(ports.pop())}
            self.relays.append(Component("relay", i, [], env, self.workdir / f"relay{i}"))
        # metrics on an ephemeral port (written to its log): the verdict comes from `audit --month`
        env = {**self.env, "OPSMANTIK_AUDIT_METRICS_PORT": "0"}
        self.audits.append(Component("audit", 0, ["--follow"], env, self.workdir / "audit0"))
        for c in self.components:
            c.start()

    def supervise(self) -> None:
        for c in self.components:
            c.supervise()

    def stop(self) -> None:
        for c in self.components:
            c.stop()

    async def drop(self) -> None:
        admin = await asyncpg.connect(self.engines.stack.database_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
        finally:
            await admin.close()

    def crash_report(self) -> dict[str, int]:
        return {c.name: c.crashes for c in self.components if c.crashes}

    def crash_notes(self) -> list[str]:
        return [
            f"{c.name} exited on its own with {c.exit_codes}; last log lines:\n" + c.log_tail(5)
            for c in self.components
            if c.exit_codes
        ]


async def wait_http_ready(url: str, timeout_s: float) -> bool:
    """Poll GET /healthz until it answers 200 (the gateway is listening)."""
    import aiohttp

    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            try:
                async with http.get(url + "/healthz", timeout=aiohttp.ClientTimeout(total=1)) as r:
                    if r.status == 200:
                        return True
            except (TimeoutError, aiohttp.ClientError):
                pass
            await asyncio.sleep(0.2)
    return False
