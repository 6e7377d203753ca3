"""`opsmantik reconcile` as a real process over ledger rows written by the worker's own
batch transaction (opsmantik.worker.ledger.write_batch) on the real Postgres."""

from __future__ import annotations

import subprocess
import uuid
from datetime import UTC, datetime

import asyncpg
import orjson
import pytest
from opsmantik import sites
from opsmantik.config import Settings
from opsmantik.worker.ledger import write_batch
from opsmantik.worker.message import IngestEvent, decode

from tests.support.environment import module_environment
from tests.support.pipeline import OPSMANTIK, env_for, message

pytestmark = pytest.mark.integration


settings, pool = module_environment()


def run_reconcile(settings: Settings, *extra: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [OPSMANTIK, "reconcile", *extra], env=env_for(settings), capture_output=True, timeout=60
    )


async def ledgered_site(pool: asyncpg.Pool, n: int) -> uuid.UUID:
    async with pool.acquire() as conn:
        site = (await sites.create_site(conn, f"rec-{uuid.uuid4().hex[:6]}", monthly_quota=2)).site_id
        events = [decode(message(site, f"e{i}", quantity=10), 0, i) for i in range(n)]
        assert all(isinstance(e, IngestEvent) for e in events)
        result = await write_batch(conn, "test", "test:1", events, [])  # type: ignore[arg-type]
        assert (result.new, result.overlimit) == (n, n - 2)
    return site


async def test_reconcile_reports_no_drift_then_names_the_corrupted_site(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    month = datetime.now(UTC).strftime("%Y-%m")
    clean, corrupt = await ledgered_site(pool, 3), await ledgered_site(pool, 5)

    done = run_reconcile(settings, "--month", month, "--json")
    report = orjson.loads(done.stdout)
    assert done.returncode == 0, report
    assert report["ok"] and {str(clean), str(corrupt)} <= {s["site_id"] for s in report["sites"]}

    await pool.execute("UPDATE site_usage_monthly SET quantity = quantity + 1 WHERE site_id = $1", corrupt)
    try:
        done = run_reconcile(settings, "--month", month, "--json")
        report = orjson.loads(done.stdout)
        assert done.returncode == 1
        assert report["drifting_sites"] == [str(corrupt)]
        bad = next(s for s in report["sites"] if s["site_id"] == str(corrupt))
        assert (bad["drift_quantity"], bad["drift_events"]) == (1, 0)

        human = run_reconcile(settings, "--month", month)
        assert human.returncode == 1
        assert f"DRIFT site {corrupt}" in human.stdout.decode()
        stored = await pool.fetchval(
            "SELECT drift_quantity FROM reconcile_results WHERE site_id = $1 ORDER BY run_at DESC LIMIT 1",
            corrupt,
        )
        assert stored == 1
    finally:  # later tests reconcile the same database: leave it consistent
        await pool.execute(
            "UPDATE site_usage_monthly SET quantity = quantity - 1 WHERE site_id = $1", corrupt
        )


async def test_reconcile_rejects_a_bad_month(settings: Settings) -> None:
    done = run_reconcile(settings, "--month", "2026-13")
    assert done.returncode == 2 and b"YYYY-MM" in done.stderr
