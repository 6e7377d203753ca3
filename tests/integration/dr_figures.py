"""The database-loss figures of docs/results/2026-12-06-database-loss.md (issue 29), each on a
private stack of its own (tests/support/stacks.py; never the shared one):

    PYTHONPATH=. .venv/bin/python -m tests.integration.dr_figures outbox-cost [--seconds 10]
    PYTHONPATH=. .venv/bin/python -m tests.integration.dr_figures replay [--events 20000]

outbox-cost: concurrent writers commit outbox batches exactly as the gateway's fallback path does
(queries.sql insert_outbox: one INSERT … unnest() transaction of 5 events); commits/s and latency
p50/p99 with the standby synchronous, then asynchronous, then stopped, in the same run.

replay: N events produced (acks=all) and ledgered, the database destroyed and restored to a
backup taken before them, `opsmantik recover`, the worker started: the rate at which it rebuilds
the ledger (rows per second, from its first new row to the N-th; and from its start)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
from opsmantik import sites
from opsmantik.config import Settings
from opsmantik.db.migrate import migrate
from opsmantik.devstack.stack import Stack
from opsmantik.recovery import backup

from tests.integration.test_recovery import cli, destroy, ledger_ids, send
from tests.support.environment import create_environment
from tests.support.pipeline import Pipeline, message
from tests.support.process import free_port_block, wait_until
from tests.support.stacks import private_stack

WRITERS = 8
BATCH = 5
INSERT = (
    "INSERT INTO ingest_fallback_buffer (site_id, event_id, payload, received_at) "
    "SELECT $1::uuid, e, p, $4::timestamptz FROM unnest($2::text[], $3::bytea[]) AS t (e, p)"
)


async def _write_for(pool: asyncpg.Pool, site: uuid.UUID, seconds: float, tag: str) -> list[float]:
    """Latencies of outbox commits made by WRITERS concurrent writers for `seconds`."""
    latencies: list[float] = []
    stop_at = time.monotonic() + seconds

    async def writer(n: int) -> None:
        i = 0
        while time.monotonic() < stop_at:
            i += 1
            ids = [f"{tag}-{n}-{i}-{j}" for j in range(BATCH)]
            now = datetime.now(UTC)
            payloads = [message(site, e, path="fallback", received_at=now) for e in ids]
            t0 = time.monotonic()
            await pool.execute(INSERT, site, ids, payloads, now)
            latencies.append(time.monotonic() - t0)

    await asyncio.gather(*(writer(n) for n in range(WRITERS)))
    return latencies


def _row(what: str, lat: list[float], seconds: float) -> str:
    q = statistics.quantiles(lat, n=100)
    return (
        f"| {what} | {len(lat) / seconds:.0f} commits/s ({len(lat) * BATCH / seconds:.0f} events/s) | "
        f"p50 {q[49] * 1000:.2f} ms, p99 {q[98] * 1000:.2f} ms |"
    )


async def outbox_cost(seconds: float) -> None:
    with private_stack("outbox-cost") as made:  # Postgres and its standby only
        stack = dataclasses.replace(made, standby_port=free_port_block([0]))
        try:
            await _outbox_cost_on(stack, seconds)
        finally:
            stack.down()  # private_stack's own down() knows no standby


async def _outbox_cost_on(stack: Stack, seconds: float) -> None:
    stack.pg_up()
    conn = await asyncpg.connect(stack.database_url)
    await migrate(conn)
    await conn.close()
    stack.standby_up()
    pool = await asyncpg.create_pool(stack.database_url, min_size=WRITERS, max_size=WRITERS)
    async with pool.acquire() as conn:
        site = (await sites.create_site(conn, "cost")).site_id
    await _write_for(pool, site, 2.0, "warm")
    rows = []
    for mode in ("sync", "async", "none", "sync"):
        if mode == "none":
            await asyncio.to_thread(stack.standby_down)
        elif mode == "sync" and rows:
            await asyncio.to_thread(stack.standby_up)  # comes back synchronous
        else:
            await asyncio.to_thread(stack.set_synchronous, mode == "sync")
        lat = await _write_for(pool, site, seconds, mode)
        label = {"sync": "synchronous standby", "async": "asynchronous standby", "none": "no standby"}
        rows.append(_row(label[mode], lat, seconds))
    await pool.close()
    print(f"outbox commits, {WRITERS} writers, batches of {BATCH}, {seconds:.0f} s each:")
    print("\n".join(rows))


async def replay(events: int) -> None:
    base = Settings.from_env()
    with private_stack("replay") as made:
        stack = dataclasses.replace(made, archive_timeout_s=1)
        stack.up()
        settings = await create_environment(
            dataclasses.replace(
                base,
                database_url=stack.database_url,
                kafka_bootstrap=stack.kafka_bootstrap,
                topic_partitions=3,
            )
        )
        conn = await asyncpg.connect(settings.database_url)
        site = (await sites.create_site(conn, "replay")).site_id
        await conn.close()
        taken = backup.take_backup(stack)
        with tempfile.TemporaryDirectory() as logs:
            p = Pipeline.start(settings, Path(logs), ("worker", "relay"))
            try:
                ids = [f"r-{i}" for i in range(events)]
                send(settings, site, ids)
                await _until_rows(settings, site, events, 600)
                wait_until(
                    lambda: (backup.newest_archived(stack) or taken.finished) > taken.finished, 60, 0.2, "WAL"
                )
                p["worker"].stop()
                p["relay"].stop()
                destroy(stack)
                backup.restore(stack, taken.finished)
                code, out = cli(
                    settings, "recover", "--since", taken.finished.isoformat(), "--margin-s", "60"
                )
                assert code == 0, out
                p.start_one("relay")
                started = time.monotonic()
                p.start_one("worker")
                first = await _until_rows(settings, site, 1, 300)
                done = await _until_rows(settings, site, events, 900)
            finally:
                p.stop()
        print(
            f"replay of {events} events by the worker after `recover` (3 partitions): "
            f"{events / (done - first):.0f} events/s from its first row to the last "
            f"({done - first:.1f} s); {events / (done - started):.0f} events/s counting its start "
            f"({done - started:.1f} s)"
        )


async def _until_rows(settings: Settings, site: uuid.UUID, n: int, timeout_s: float) -> float:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if len(await ledger_ids(settings, site)) >= n:
                return time.monotonic()
        except (OSError, asyncpg.PostgresError):
            pass
        await asyncio.sleep(0.1)
    raise AssertionError(f"{n} ledger rows not reached in {timeout_s:.0f} s")


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m tests.integration.dr_figures")
    ap.add_argument("figure", choices=["outbox-cost", "replay"])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--events", type=int, default=20000)
    a = ap.parse_args()
    asyncio.run(outbox_cost(a.seconds) if a.figure == "outbox-cost" else replay(a.events))


if __name__ == "__main__":
    main()
