"""The primary is lost under load (issue 29, docs/runbook.md "Primary lost"): on a private stack
with a synchronous standby (`stack up --standby`), producers send through the gateway, first on
the Kafka path, then with the broker killed so every 200 comes from a Postgres outbox row; the
standby lags for a second (the primary's WAL sender frozen), then the primary's processes are SIGKILLed
and its data directory deleted while they send; the standby is promoted (`pg_ctl promote`); the
gateway, worker and relay reconnect by themselves (the multi-host URL with
target_session_attrs=read-write); the broker comes back. Every acknowledged event (every 200) is
in the ledger exactly once, reconcile finds 0 drift, audit 0 unaccounted.

The run's length: OPSMANTIK_DR_PHASE_S seconds per phase (default 3; `make dr` runs 20).
Planted: an asynchronous standby (`synchronous_standby_names` empty, OPSMANTIK_DR_ASYNC=1): the
200s answered while the standby lagged are lost and the test fails naming them."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shutil
import signal
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import asyncpg
import orjson
import pytest
from opsmantik.config import Settings
from opsmantik.devstack.stack import Stack, StackError
from opsmantik.sites import create_site_with_key

from tests.integration.test_recovery import cli
from tests.support.environment import create_environment
from tests.support.gateway import auth, event
from tests.support.pipeline import Pipeline, wait_for
from tests.support.process import free_port_block, wait_until
from tests.support.stacks import private_stack

pytestmark = [pytest.mark.integration, pytest.mark.own_stack]
MONTH = datetime.now(UTC).strftime("%Y-%m")
PHASE_S = float(os.environ.get("OPSMANTIK_DR_PHASE_S", "3"))
CLIENTS = 4
BATCH = 5
LAG_S = 1.0  # the primary's WAL sender frozen this long before the primary dies
PACE_S = 0.04  # per client between requests: ~500 events/s in all, so the drain stays short


def standby_stack(name: str, synchronous: bool = True) -> Iterator[Stack]:
    """A private stack (tests/support/stacks.py) with a standby on a free port of its own."""
    with private_stack(name) as made:
        stack = dataclasses.replace(made, standby_port=free_port_block([0]), synchronous=synchronous)
        try:
            with ThreadPoolExecutor(1) as pool:  # Kafka's start (the longest) beside Postgres'
                kafka = pool.submit(stack.kafka_up)
                stack.pg_up()
                stack.standby_up()
                kafka.result()
            yield stack
        finally:
            stack.down()  # the private stack's own down() knows no standby


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    yield from standby_stack("primary-loss", synchronous=os.environ.get("OPSMANTIK_DR_ASYNC") != "1")


async def standby_settings(base: Settings, stack: Stack, **overrides: object) -> Settings:
    """A fresh migrated database and topics, made on the primary (the standby replays them), then
    the multi-host URL every process uses."""
    primary_only = dataclasses.replace(stack, standby_port=0)
    s = await create_environment(
        dataclasses.replace(
            base,
            database_url=primary_only.database_url,
            kafka_bootstrap=stack.kafka_bootstrap,
            **overrides,  # type: ignore[arg-type]
        )
    )
    db = s.database_url.rsplit("/", 1)[1]
    return dataclasses.replace(s, database_url=stack.database_url.replace("/opsmantik?", f"/{db}?"))


def kill_primary(stack: Stack) -> float:
    """The primary's disk is gone: SIGKILL the postmaster and every backend (no shutdown, no last
    WAL shipped), then delete its data directory. Returns when it was dead (monotonic)."""
    pid = stack.pg_pid()
    assert pid is not None
    for victim in (pid, *_children(pid)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)
    wait_until(lambda: not stack.pg_status().running, 15, 0.01, "primary dead")
    dead_at = time.monotonic()
    shutil.rmtree(stack.pg_data())
    return dead_at


def wal_sender(stack: Stack) -> int:
    """The primary's WAL sender to the standby (a child of its postmaster)."""
    primary = stack.pg_pid()
    assert primary is not None
    for child in _children(primary):
        with contextlib.suppress(OSError):
            if b"walsender" in Path(f"/proc/{child}/cmdline").read_bytes():
                return child
    raise AssertionError("the primary has no walsender")


def _children(pid: int) -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _ppid(p) == pid]


def _ppid(proc: Path) -> int:
    try:
        return int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


@dataclass
class Load:
    """Clients posting batches to the gateway; what was answered 200, and when."""

    url: str
    key: str
    acked: set[str] = field(default_factory=set)
    via_outbox: set[str] = field(default_factory=set)
    statuses: dict[int, int] = field(default_factory=dict)
    ok_times: list[tuple[float, float]] = field(default_factory=list)  # each 200's (sent, answered)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def client(self, n: int) -> None:
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            i = 0
            while not self.stop.is_set():
                i += 1
                sent = time.monotonic()
                ids = [f"c{n}-{i}-{j}" for j in range(BATCH)]
                body = orjson.dumps({"events": [event(x) for x in ids]})
                try:
                    async with session.post(f"{self.url}/api/sync", data=body, headers=auth(self.key)) as r:
                        status = r.status
                        doc = await r.json() if status == 200 else None
                except (aiohttp.ClientError, TimeoutError):
                    status = 0
                self.statuses[status] = self.statuses.get(status, 0) + 1
                if status == 200 and doc is not None:
                    self.ok_times.append((sent, time.monotonic()))
                    for x in doc["results"]:
                        self.acked.add(x["event_id"])
                        if "outbox_id" in x["receipt"]:
                            self.via_outbox.add(x["event_id"])
                await asyncio.sleep(PACE_S)


async def ledger_ids(url: str, site: uuid.UUID) -> set[str]:
    conn = await asyncpg.connect(url, timeout=5)
    try:
        rows = await conn.fetch("SELECT event_id FROM ingest_idempotency WHERE site_id = $1", site)
        return {r["event_id"] for r in rows}
    finally:
        await conn.close()


@dataclass(frozen=True)
class Outcome:
    acked: int
    via_outbox: int
    lost: set[str]
    failover_s: float
    statuses: dict[int, int]
    restarts: list[str]


async def primary_lost_under_load(stack: Stack, settings: Settings, log_dir: Path) -> Outcome:
    conn = await asyncpg.connect(settings.database_url)
    made = await create_site_with_key(conn, "dr", rate=1e6, burst=1_000_000)
    await conn.close()
    p = Pipeline.start(settings, log_dir, ("gateway", "worker", "relay"))
    try:
        load = Load(p.url, made.api_key)
        restarts: list[str] = []
        supervisor = asyncio.create_task(supervise(p, load.stop, restarts))
        clients = [asyncio.create_task(load.client(n)) for n in range(CLIENTS)]
        await wait_for(lambda: _on_kafka(load), 60, what="a 200 on the Kafka path")
        await asyncio.sleep(PHASE_S)  # the Kafka path under load (the phase, not a wait)
        await asyncio.to_thread(_kill_kafka, stack)
        await asyncio.sleep(PHASE_S)  # the outbox path under load: every 200 is a row
        outbox_before = len(load.via_outbox)
        # The standby falls behind just before the primary is lost (the primary's WAL sender
        # frozen, as a slow link would): a synchronous primary answers no commit meanwhile; an
        # asynchronous one answers 200s for rows the standby never gets (the planted bug's loss).
        os.kill(wal_sender(stack), signal.SIGSTOP)  # SIGKILLed with the primary below
        await asyncio.sleep(LAG_S)  # the lag under test, not a wait for a condition
        killed_at = await asyncio.to_thread(kill_primary, stack)
        await asyncio.to_thread(stack.promote)
        await wait_for(
            lambda: _sent_and_ok_after(load, killed_at), 60, what="a 200 from the promoted standby"
        )
        failover_s = min(done for sent, done in load.ok_times if sent > killed_at) - killed_at
        await asyncio.sleep(PHASE_S)  # the outbox on the promoted standby under load
        await asyncio.to_thread(stack.kafka_up)
        await asyncio.sleep(PHASE_S)  # the Kafka path again
        load.stop.set()
        await asyncio.gather(*clients, supervisor)
        assert outbox_before > 0, f"no 200 came from the outbox before the primary was lost: {load.statuses}"

        async def drained() -> bool:
            try:
                return len(await ledger_ids(settings.database_url, made.site_id)) >= len(load.acked)
            except (OSError, asyncpg.PostgresError):
                return False

        drain_stop = asyncio.Event()
        supervisor = asyncio.create_task(supervise(p, drain_stop, restarts))
        with contextlib.suppress(AssertionError):  # the lost ones are reported below
            await wait_for(drained, 120, 0.5, what="every acknowledged event in the ledger")
        drain_stop.set()
        await supervisor
        in_ledger = await ledger_ids(settings.database_url, made.site_id)
        return Outcome(
            len(load.acked), len(load.via_outbox), load.acked - in_ledger, failover_s, load.statuses, restarts
        )
    finally:
        p.stop()


async def supervise(p: Pipeline, stop: asyncio.Event, restarts: list[str]) -> None:
    """What a deployment does (restartPolicy, systemd): start a component again when it exits.
    The worker exits by design when Kafka stays away longer than its publish retry (60 s), which
    the long form's outage is."""
    while not stop.is_set():
        for name in ("worker", "relay"):
            if not p[name].alive():
                restarts.append(f"{name} (exit {p[name].returncode})")
                await asyncio.to_thread(p.start_one, name)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)


async def _sent_and_ok_after(load: Load, t: float) -> bool:
    """A request sent after the kill was answered 200 (one in flight may commit before it)."""
    return any(sent > t for sent, _ in load.ok_times[-50:])


async def _on_kafka(load: Load) -> bool:
    return len(load.acked) > len(load.via_outbox)


def _kill_kafka(stack: Stack) -> None:
    pid = stack.kafka_pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not stack.kafka_status().running, 15, 0.05, "broker dead")


async def test_primary_lost_under_load_every_acknowledged_event_once(
    stack: Stack, base_settings: Settings, tmp_path: Path
) -> None:
    settings = await standby_settings(base_settings, stack, topic_partitions=2)
    got = await primary_lost_under_load(stack, settings, tmp_path)
    print(
        f"\nprimary lost: {got.acked} events acknowledged ({got.via_outbox} through the outbox), "
        f"failover (primary killed → first 200) {got.failover_s:.2f} s, statuses {got.statuses}, "
        f"lost {len(got.lost)}, restarted {got.restarts or 'nothing'}"
    )
    assert not got.lost, f"{len(got.lost)} acknowledged events are not in the ledger: {sorted(got.lost)[:10]}"
    if PHASE_S <= 5:  # the bounded form: Kafka is away < 60 s, the DB fails over: nothing exits
        assert not got.restarts, got.restarts
    # Exactly once: the ledger's key is (site, event_id); the counts and invoices must agree with it.
    code, out = cli(settings, "reconcile", "--month", MONTH)
    assert code == 0, out
    code, out = cli(settings, "audit", "--month", MONTH)
    assert code == 0, out
    # The stack knows what happened: no new primary over the promoted standby's data.
    assert [e.role for e in stack.status() if e.name == "postgres-standby"] == ["promoted (primary)"]
    with pytest.raises(StackError, match="was promoted"):
        stack.pg_up()
