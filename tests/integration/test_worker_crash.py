"""Crash semantics of the worker as a real process: SIGKILL mid-batch, and a DB write that
keeps failing (never acked, exit non-zero, replayed by the next worker)."""

from __future__ import annotations

import asyncio
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import orjson
import pytest
from opsmantik.config import Settings

from tests.support.environment import module_environment
from tests.support.pipeline import (
    OPSMANTIK,
    Pipeline,
    env_for,
    ledger_count,
    ledgered,
    message,
    new_site_id,
    produce,
    wait_for,
)

pytestmark = pytest.mark.integration


settings, pool = module_environment()


def worker_and_relay(settings: Settings, log_dir: Path, **env: object) -> Pipeline:
    """The pipeline a test crashes and restarts: worker and relay (the events here go straight to
    the topic, so no gateway), with the test's worker settings."""
    return Pipeline.start(settings, log_dir, ("worker", "relay"), **env)


def reconcile(settings: Settings) -> tuple[int, dict]:
    month = datetime.now(UTC).strftime("%Y-%m")
    done = subprocess.run(
        [OPSMANTIK, "reconcile", "--month", month, "--json"],
        env=env_for(settings),
        capture_output=True,
        timeout=60,
    )
    return done.returncode, orjson.loads(done.stdout)


async def test_failing_db_write_is_never_acked_and_the_worker_exits_nonzero(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    site = await new_site_id(pool)
    pipe = worker_and_relay(settings, tmp_path, worker_retry_max_s=2)  # idle: nothing produced yet
    try:
        # A constraint only this event violates: every attempt to commit its batch fails.
        await pool.execute(
            "ALTER TABLE ingest_idempotency ADD CONSTRAINT test_reject_poison "
            "CHECK (event_id <> 'poison-1') NOT VALID"
        )
        try:
            produce(settings, [(str(site).encode(), message(site, "poison-1"))])
            rc = await asyncio.to_thread(pipe.worker.popen.wait, 60)  # type: ignore[union-attr]
            assert rc == 1, pipe.worker.tail()
            assert "giving up" in pipe.worker.log.read_text()
            assert await ledger_count(pool, site) == 0
        finally:
            await pool.execute("ALTER TABLE ingest_idempotency DROP CONSTRAINT IF EXISTS test_reject_poison")
        pipe.start_one("worker")  # the next worker, as a supervisor restarts it
        await wait_for(ledgered(pool, site, 1), what="the unacked event replayed to the next worker")
    finally:
        pipe.stop_cleanly()


async def test_worker_sigkilled_mid_batch_then_restarted(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    site = await new_site_id(pool)
    total, first = 2000, 300
    msgs = [(str(site).encode(), message(site, f"m-{i}", quantity=i % 7 + 1)) for i in range(total)]
    produce(settings, msgs[:first])
    pipe = worker_and_relay(settings, tmp_path, worker_batch=100)
    try:
        blocker = await asyncpg.connect(settings.database_url)
        try:
            await wait_for(ledgered(pool, site, first), what="some batches committed")
            tx = blocker.transaction()
            await tx.start()
            # The next batch inserts its ledger rows, then waits on this lock before COMMIT. The rest
            # is produced only now: a worker fast enough to ledger all 2000 first cannot slip past.
            await blocker.execute("LOCK TABLE slo_freshness IN SHARE MODE")
            produce(settings, msgs[first:])

            async def worker_waits_mid_transaction() -> bool:
                return (
                    await pool.fetchval(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                        "AND wait_event_type = 'Lock' AND query LIKE '%slo_freshness%'"
                    )
                    > 0
                )

            await wait_for(worker_waits_mid_transaction, what="worker blocked inside a batch transaction")
            committed = await ledger_count(pool, site)
            assert first <= committed < total
            pipe.kill("worker")
            await tx.rollback()
        finally:
            await blocker.close()
            pipe.kill("worker")
        pipe.start_one("worker")
        # A generous liveness bound: the group first waits out the dead member's session.
        await wait_for(ledgered(pool, site, total), 90, what="restarted worker caught up")
    finally:
        pipe.stop_cleanly()
    row = await pool.fetchrow(
        "SELECT count(*) AS n, count(DISTINCT event_id) AS d, sum(quantity) AS q "
        "FROM ingest_idempotency WHERE site_id = $1",
        site,
    )
    expected_q = sum(i % 7 + 1 for i in range(total))
    assert (row["n"], row["d"], row["q"]) == (total, total, expected_q)
    inv = await pool.fetchrow("SELECT events, quantity FROM site_usage_monthly WHERE site_id = $1", site)
    assert (inv["events"], inv["quantity"]) == (total, expected_q)
    rc, report = reconcile(settings)
    assert rc == 0 and report["ok"] and report["drifting_sites"] == []
    assert str(site) in {s["site_id"] for s in report["sites"]}


async def test_watchdog_restarts_a_stalled_consumer(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    site = await new_site_id(pool)
    key = str(site).encode()
    pipe = worker_and_relay(settings, tmp_path, worker_watchdog_s=3)
    worker = pipe.worker
    blocker = await asyncpg.connect(settings.database_url)
    sent = 0
    try:
        produce(settings, [(key, message(site, "wd-0"))])
        sent = 1
        await wait_for(ledgered(pool, site, 1), 60, what="worker consuming")
        tx = blocker.transaction()
        await tx.start()
        await blocker.execute("LOCK TABLE slo_freshness IN SHARE MODE")  # batches hang, no error
        for _ in range(60):  # lag grows while the committed offset stands still
            produce(settings, [(key, message(site, f"wd-{sent}"))])
            sent += 1
            if "WATCHDOG" in worker.log.read_text():
                break
            await asyncio.sleep(0.5)  # the test: one event every 0.5 s, lag growing until the watchdog
        assert "WATCHDOG" in worker.log.read_text(), worker.tail()
        await tx.rollback()
        await wait_for(ledgered(pool, site, sent), 60, what="restarted consumer ledgered the backlog")
    finally:
        await blocker.close()
        pipe.stop_cleanly()
    assert await ledger_count(pool, site) == sent
