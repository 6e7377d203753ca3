"""The worker's incremental reconcile (opsmantik.billing.reconcile.incremental_pass, issue 28) on the
real Postgres: a pass compares only the sites whose invoice changed since the previous pass and the
drifting ones, and its kept figures stay those of a full comparison of every site; a change made by
a transaction open during a pass is compared by the next one; `opsmantik reconcile` (full_pass)
finds what leaves no trace; /status reads the kept figures."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

import asyncpg
import pytest
from opsmantik import sites
from opsmantik.billing import reconcile
from opsmantik.status.signals import Q as STATUS_Q
from opsmantik.worker.ledger import write_batch
from opsmantik.worker.message import IngestEvent, decode

from tests.support.environment import module_environment
from tests.support.pipeline import message

pytestmark = pytest.mark.integration

settings, pool = module_environment()  # a database of its own: the passes judge every site of it


@pytest.fixture(autouse=True)
def no_overlap(monkeypatch: pytest.MonkeyPatch) -> None:
    """No re-read margin: a pass compares exactly the sites changed since the previous one (the
    margin only adds recently changed sites; without it a watermark bug is not hidden)."""
    monkeypatch.setattr(reconcile, "OVERLAP_S", 0.0)


def month_now() -> date:
    return datetime.now(UTC).date().replace(day=1)


async def ledger(conn: asyncpg.Connection, site: uuid.UUID, prefix: str, n: int) -> None:
    events = [decode(message(site, f"{prefix}{i}", quantity=3), 0, i) for i in range(n)]
    assert all(isinstance(e, IngestEvent) for e in events)
    await write_batch(conn, "test", "test:1", events, [])  # type: ignore[arg-type]


async def new_ledgered_site(conn: asyncpg.Connection, n: int) -> uuid.UUID:
    site = (await sites.create_site(conn, f"inc-{uuid.uuid4().hex[:6]}")).site_id
    await ledger(conn, site, "e", n)
    return site


async def same_as_full(conn: asyncpg.Connection, state: reconcile.MonthState) -> None:
    """The kept figures equal a full comparison's (compared without touching the kept state)."""
    full = await reconcile.reconcile_month(conn, state.month)
    assert state.ledger_events == sum(s.ledger_events for s in full.sites)
    assert state.drifting == full.drifting
    assert state.drift_ratio() == reconcile.drift_ratio(full)


async def test_a_pass_compares_the_changed_sites_and_keeps_the_full_figures(pool: asyncpg.Pool) -> None:
    month = month_now()
    async with pool.acquire() as conn:
        a, b = await new_ledgered_site(conn, 3), await new_ledgered_site(conn, 5)
        first = await reconcile.incremental_pass(conn, month)
        assert first is not None and first.full and first.ok and first.compared >= 2
        await same_as_full(conn, first)

        await ledger(conn, a, "more", 4)  # a's invoice row changes; b's does not
        p = await reconcile.incremental_pass(conn, month)
        assert p is not None and not p.full and p.ok
        assert p.compared == 1  # a alone, not every site
        assert p.ledger_events == first.ledger_events + 4
        await same_as_full(conn, p)

        # a planted invoice row (no ledger behind it) is a changed row: found by the next pass
        planted = (await sites.create_site(conn, "inc-planted")).site_id
        await conn.execute(
            "INSERT INTO site_usage_monthly (site_id, month, events, quantity) VALUES ($1, $2, 7, 7)",
            planted,
            month,
        )
        p = await reconcile.incremental_pass(conn, month)
        assert p is not None and p.drifting == [str(planted)] and p.compared == 1
        await same_as_full(conn, p)
        acc = await conn.fetchrow(STATUS_Q["month_accuracy"], month)
        assert (acc["drift"], acc["ledger"]) == (7, p.ledger_events) and acc["run_at"] == p.run_at

        # a drifting site is compared at every pass: its row deleted, the drift is gone
        await conn.execute("DELETE FROM site_usage_monthly WHERE site_id = $1", planted)
        p = await reconcile.incremental_pass(conn, month)
        assert p is not None and p.ok and p.compared == 1
        await same_as_full(conn, p)
        assert (await conn.fetchrow(STATUS_Q["month_accuracy"], month))["drift"] == 0

        # nothing changed: nothing compared
        p = await reconcile.incremental_pass(conn, month)
        assert p is not None and p.compared == 0 and p.ok
        assert b  # (b stayed untouched throughout)


async def test_a_hand_edit_without_updated_at_is_found_by_the_full_pass(pool: asyncpg.Pool) -> None:
    month = month_now()
    async with pool.acquire() as conn:
        site = await new_ledgered_site(conn, 2)
        await reconcile.incremental_pass(conn, month)
        await conn.execute("UPDATE site_usage_monthly SET quantity = quantity + 1 WHERE site_id = $1", site)
        try:
            p = await reconcile.incremental_pass(conn, month)
            assert p is not None and p.ok  # no trace the pass can follow: the documented limit
            report, state = await reconcile.full_pass(conn, month)
            assert report.drifting == [str(site)] == state.drifting
            p = await reconcile.incremental_pass(conn, month)  # kept: compared again at every pass
            assert p is not None and p.drifting == [str(site)]
        finally:
            await conn.execute(
                "UPDATE site_usage_monthly SET quantity = quantity - 1 WHERE site_id = $1", site
            )
        p = await reconcile.incremental_pass(conn, month)
        assert p is not None and p.ok
        await same_as_full(conn, p)


async def test_a_change_committed_after_a_pass_began_is_compared_by_the_next(pool: asyncpg.Pool) -> None:
    """The watermark is the oldest open transaction's start: a batch whose transaction began before a
    pass and committed after it stamps updated_at earlier than the pass ran, and is still found."""
    month = month_now()
    async with pool.acquire() as conn, pool.acquire() as writer:
        site = await new_ledgered_site(conn, 1)
        await reconcile.incremental_pass(conn, month)
        tx = writer.transaction()
        await tx.start()
        try:
            await writer.execute(
                "UPDATE site_usage_monthly SET events = events + 5, updated_at = now() WHERE site_id = $1",
                site,
            )
            p = await reconcile.incremental_pass(conn, month)  # does not see the open change
            assert p is not None and p.ok
        finally:
            await tx.commit()
        try:
            p = await reconcile.incremental_pass(conn, month)
            assert p is not None and p.drifting == [str(site)]
        finally:
            await conn.execute("UPDATE site_usage_monthly SET events = events - 5 WHERE site_id = $1", site)
        p = await reconcile.incremental_pass(conn, month)
        assert p is not None and p.ok


async def test_one_pass_of_a_month_at_a_time(pool: asyncpg.Pool) -> None:
    month = month_now()
    async with pool.acquire() as conn, pool.acquire() as other:
        await reconcile.incremental_pass(conn, month)
        async with other.transaction():
            await other.execute(
                "SELECT pg_advisory_xact_lock(512440028, $1::int)", month.year * 100 + month.month
            )
            assert await reconcile.incremental_pass(conn, month) is None  # another pass holds it
        kept = await reconcile.read_state(conn, month)
        assert kept is not None and kept.month == month
