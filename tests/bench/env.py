"""The benchmark's own world: a private Kafka + Postgres (tests/support/stacks.py: free ports, a
fresh directory, removed after; logs under .local/bench) that it may stop for the broker-down
scenario, a fresh database and fresh topics per run, sites made with the function `opsmantik
sites create` runs, and our services as child processes.

`--on-stack` (the smoke test in `make test`): the project's running local stack instead of a
private one (its start-up is 11-28 s of a loaded machine), with the bench's own database and
topics on it; nothing on it is ever stopped (broker-down then points its gateway at a closed port).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import secrets
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
from confluent_kafka.admin import AdminClient
from opsmantik.db.queries import load_queries
from opsmantik.devstack.stack import ROOT, Stack
from opsmantik.sites import create_site_with_key

from tests.bench.procs import engine_pids
from tests.support.process import Process, stable_ports
from tests.support.stacks import new_stack, remove

Q = load_queries(Path(__file__).with_name("bench.sql"))
BENCH_HOME = ROOT / ".local" / "bench"  # logs and reports; the engines' state is a fresh dir
OPSMANTIK = [sys.executable, "-m", "opsmantik.cli"]


class BenchError(RuntimeError):
    pass


@dataclass(frozen=True)
class Statement:
    """One line of pg_stat_statements: execution time is wall time in the executor (CPU, and
    waits for locks, I/O or a core on a busy machine)."""

    label: str
    calls: int
    rows: int
    ms: float
    share: float  # of all statements' execution time


def statement_label(query: str, width: int = 70) -> str:
    """A statement's text without its comments, on one line and cut to `width`."""
    code = " ".join(line.split("--", 1)[0].strip() for line in query.splitlines())
    code = " ".join(code.split())
    return code if len(code) <= width else code[: width - 1] + "…"


@dataclass(frozen=True)
class SiteKey:
    site_id: uuid.UUID
    api_key: str


@dataclass
class BenchEnv:
    tag: str = field(default_factory=lambda: time.strftime("%m%d%H%M%S") + secrets.token_hex(2))
    stack: Stack = field(default_factory=lambda: new_stack("bench", quick_start=False))
    # The project's running stack (`BenchEnv.on_local_stack()`): never started, stopped or removed.
    shared: bool = False
    services: list[Process] = field(default_factory=list)
    # Our services' metrics ports: free ones, never the shared stack's services' ones.
    metrics_ports: list[int] = field(default_factory=lambda: stable_ports(2))
    _topics: list[str] = field(default_factory=list)
    _loop: asyncio.AbstractEventLoop | None = None
    _conn: asyncpg.Connection | None = None

    # ------------------------------------------------------------ lifecycle

    @classmethod
    def on_local_stack(cls) -> BenchEnv:
        """The project's stack (`opsmantik stack up`, ports 19092/15432), single host: a standby,
        if one was made, is not the bench's concern."""
        return cls(stack=dataclasses.replace(Stack.local(), standby_port=0), shared=True)

    @property
    def db_name(self) -> str:
        return f"bench_{self.tag}"

    @property
    def database_url(self) -> str:
        return self.stack.database_url.rsplit("/", 1)[0] + "/" + self.db_name

    @property
    def logs(self) -> Path:
        return BENCH_HOME / "logs" / self.tag

    def up(self) -> None:
        if not self.shared:
            self.stack.up()
        elif not (self.stack.kafka_status().running and self.stack.pg_status().running):
            raise BenchError("--on-stack: the local stack is not running (opsmantik stack up)")
        asyncio.run(self._admin(f'CREATE DATABASE "{self.db_name}"'))
        self.cli("migrate", topic=self.topic("a"))

    def down(self) -> None:
        self.close_queries()
        for s in self.services:
            s.stop()
        try:
            if self.stack.kafka_status().running and self._topics:
                AdminClient({"bootstrap.servers": self.stack.kafka_bootstrap}).delete_topics(self._topics)
            if self.stack.pg_status().running:
                asyncio.run(self._admin(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)'))
        finally:
            if not self.shared:
                self.stack.down()
                remove(self.stack)

    async def _admin(self, sql: str) -> None:
        conn = await asyncpg.connect(self.stack.database_url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    # ------------------------------------------------------------ settings and CLI

    def topic(self, phase: str) -> str:
        """Each phase gets its own ingest topic so a worker never starts on an old backlog."""
        name = f"bench.{self.tag}.{phase}.ingest.v1"
        if name not in self._topics:
            self._topics += [name, f"bench.{self.tag}.{phase}.billable.v1"]
        return name

    def env(self, topic: str, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPSMANTIK_")}
        env.update(
            {
                "OPSMANTIK_DATABASE_URL": self.database_url,
                "OPSMANTIK_KAFKA_BOOTSTRAP": self.stack.kafka_bootstrap,
                "OPSMANTIK_TOPIC": topic,
                "OPSMANTIK_BILLABLE_TOPIC": topic.replace(".ingest.", ".billable."),
                "OPSMANTIK_WORKER_GROUP": f"bench-{self.tag}-{topic.split('.')[2]}",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.setdefault("OPSMANTIK_WORKER_METRICS_PORT", str(self.metrics_ports[0]))
        env.setdefault("OPSMANTIK_RELAY_METRICS_PORT", str(self.metrics_ports[1]))
        env.update(extra)
        return env

    def cli(self, *args: str, topic: str, timeout_s: float = 120) -> str:
        out = subprocess.run(
            [*OPSMANTIK, *args],
            env=self.env(topic),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            cwd=ROOT,
        )
        if out.returncode != 0:
            raise BenchError(f"opsmantik {' '.join(args)} failed ({out.returncode}):\n{out.stderr}")
        return out.stdout

    def create_site(self, name: str) -> SiteKey:
        """What `opsmantik sites create NAME --rate 1000000 --burst 1000000` does, in this process
        (a CLI start-up per site was a second or two of every scenario); the key is tagged with the
        default secret, the services' too (env() passes no OPSMANTIK_KEY_SECRET)."""
        conn = self._connection()
        assert self._loop is not None
        key = self._loop.run_until_complete(
            create_site_with_key(conn, f"bench-{name}", rate=1_000_000.0, burst=1_000_000)
        )
        return SiteKey(key.site_id, key.api_key)

    # ------------------------------------------------------------ services

    def start(self, name: str, argv: list[str], topic: str, **extra_env: str) -> Process:
        svc = Process(name, argv, self.env(topic, **extra_env), self.logs / f"{name}.log").start()
        self.services.append(svc)
        return svc

    def engine_pids(self) -> list[int]:
        return engine_pids(self.stack.kafka_pid(), self.stack.pg_pid())

    # ------------------------------------------------------------ database look-ups

    def _connection(self) -> asyncpg.Connection:
        # One loop and one connection for all polling: a connect per poll would cost the machine
        # more CPU than the poll itself. Reconnects after the engines were restarted.
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        if self._conn is None or self._conn.is_closed():
            self._conn = self._loop.run_until_complete(asyncpg.connect(self.database_url))
        return self._conn

    def query(self, name: str, *args: object) -> asyncpg.Record | None:
        conn = self._connection()
        assert self._loop is not None
        return self._loop.run_until_complete(conn.fetchrow(Q[name], *args))

    def close_queries(self) -> None:
        if self._loop is None:
            return
        if self._conn is not None and not self._conn.is_closed():
            self._loop.run_until_complete(self._conn.close())
        self._loop.close()
        self._loop, self._conn = None, None

    def value(self, name: str, *args: object) -> int:
        row = self.query(name, *args)
        return int(row[0]) if row is not None and row[0] is not None else 0

    def statements_reset(self) -> bool:
        """Zero pg_stat_statements; False where Postgres does not load it (a stack made before
        Stack loaded it everywhere)."""
        conn = self._connection()
        assert self._loop is not None
        if not self._loop.run_until_complete(conn.fetchval(Q["statements_loaded"])):
            return False
        self._loop.run_until_complete(conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements"))
        self._loop.run_until_complete(conn.execute("SELECT pg_stat_statements_reset()"))
        return True

    def statements(self, top: int = 6) -> list[Statement]:
        """The statements that took the most execution time since statements_reset()."""
        conn = self._connection()
        assert self._loop is not None
        rows = self._loop.run_until_complete(conn.fetch(Q["statements"], top))
        return [
            Statement(statement_label(r["query"]), r["calls"], r["rows"], r["ms"], r["share"] or 0.0)
            for r in rows
        ]


def wait_port(port: int, svc: Process, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not svc.alive():
            raise BenchError(f"{svc.name} exited ({svc.returncode}):\n{svc.tail()}")
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise BenchError(f"{svc.name} not listening on {port} after {timeout_s:.0f}s:\n{svc.tail()}")


def wait_until(check: object, timeout_s: float, interval_s: float = 0.05) -> tuple[bool, float]:
    """Poll check() (a callable returning bool) until true; return (ok, monotonic time it became true)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return True, time.monotonic()
        time.sleep(interval_s)
    return False, time.monotonic()
