"""The ledger partitioned by usage month (migration 0009, services/opsmantik/db/partitions.py).

- the migration moves an existing ledger across three months into partitions, every row identical,
  reconcile 0 before and after;
- exactly-once across a month boundary through the real worker: a retry near midnight of a month's
  last day, and the same event_id sent with a time in another month, in both orders, is billed once;
- an event whose month has no partition yet gets one (no default partition, no failure).
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from opsmantik import schema_files, sites
from opsmantik.billing.reconcile import reconcile_month
from opsmantik.config import Settings
from opsmantik.db import partitions
from opsmantik.db.migrate import discover, migrate
from opsmantik.months import month_start, next_month, previous_month

from tests.support.pipeline import Pipeline, message, pipeline_fixture, produce, wait_for

pytestmark = pytest.mark.integration

MONTHS = [date(2026, 8, 1), date(2026, 9, 1), date(2026, 10, 1)]


@pytest.fixture
async def empty_db(base_settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    name = f"opsmantik_part_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(base_settings.database_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    conn = await asyncpg.connect(base_settings.database_url.rsplit("/", 1)[0] + "/" + name)
    yield conn
    await conn.close()
    await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    await admin.close()


def migrations_up_to(tmp: Path, version: str) -> Path:
    src = schema_files.migrations_dir()
    for p in src.iterdir():
        if p.name.endswith(".sql") and p.name[:4] <= version:
            (tmp / p.name).write_text(p.read_text(encoding="utf-8"), encoding="utf-8")
    return tmp


SEED = """
INSERT INTO ingest_idempotency (site_id, event_id, event_type, occurred_at, usage_month, billing_month,
    quantity, billing_class, path, received_at, ledgered_at, kafka_partition, kafka_offset, properties)
SELECT $1, 'ev-' || $2 || '-' || g, 'api_call', $3::timestamptz + g * interval '1 minute',
       date_trunc('month', $3::timestamptz AT TIME ZONE 'UTC')::date, $4::date, 1 + g % 5,
       CASE WHEN g % 4 = 0 THEN 'overlimit' ELSE 'included' END,
       CASE WHEN g % 3 = 0 THEN 'fallback' ELSE 'kafka' END,
       $3::timestamptz + g * interval '1 minute' + interval '3 ms', '2026-12-01T00:00:00.123456Z',
       CASE WHEN g % 3 = 0 THEN NULL ELSE g % 6 END, CASE WHEN g % 3 = 0 THEN NULL ELSE g END,
       CASE WHEN g % 7 = 0 THEN NULL ELSE jsonb_build_object('n', g, 'é', 'ü €', 'x', 2.50) END
FROM generate_series(1, $5::int) AS g
"""
INVOICE = """
INSERT INTO site_usage_monthly AS u (site_id, month, events, quantity, overlimit_events, overlimit_quantity)
SELECT site_id, billing_month, count(*), sum(quantity), count(*) FILTER (WHERE billing_class = 'overlimit'),
       coalesce(sum(quantity) FILTER (WHERE billing_class = 'overlimit'), 0)
FROM ingest_idempotency GROUP BY site_id, billing_month
"""
ALL_ROWS = """
SELECT site_id, event_id, event_type, occurred_at, usage_month, billing_month, quantity, billing_class,
       path, received_at, ledgered_at, kafka_partition, kafka_offset, properties::text
FROM ingest_idempotency ORDER BY site_id, event_id COLLATE "C"
"""


async def drift(conn: asyncpg.Connection) -> list[tuple[date, int, bool]]:
    out = []
    for m in MONTHS:
        report = await reconcile_month(conn, m)
        out.append((m, len(report.sites), report.ok))
    return out


async def test_migration_moves_three_months_into_partitions_unchanged(
    empty_db: asyncpg.Connection, tmp_path: Path
) -> None:
    conn = empty_db
    await migrate(conn, migrations_up_to(tmp_path, "0008"))
    site_a = (await sites.create_site(conn, "part-a")).site_id
    site_b = (await sites.create_site(conn, "part-b")).site_id
    for site in (site_a, site_b):
        for i, m in enumerate(MONTHS):
            await conn.execute(SEED, site, f"{i}", month_start(m) + timedelta(hours=1), m, 200 + 50 * i)
        # late rows: events of August (closed) billed in September
        await conn.execute(SEED, site, "late", month_start(MONTHS[0]) + timedelta(days=20), MONTHS[1], 30)
    await conn.execute("INSERT INTO closed_months (month) VALUES ($1)", MONTHS[0])
    await conn.execute(INVOICE)
    # a void (its foreign key to the ledger is what 0009 has to drop and replace)
    await conn.execute(
        "INSERT INTO billing_voids (site_id, event_id, billed_month, booked_month, quantity, billing_class,"
        " reason, voided_by) SELECT site_id, event_id, billing_month, billing_month, quantity, billing_class,"
        " 'test', 'me' FROM ingest_idempotency WHERE site_id = $1 AND event_id = 'ev-1-5'",
        site_a,
    )
    await conn.execute(
        "UPDATE site_usage_monthly SET events = events - 1, quantity = quantity - 1"
        " WHERE site_id = $1 AND month = $2",
        site_a,
        MONTHS[1],
    )
    before = await conn.fetch(ALL_ROWS)
    assert len(before) == 2 * (200 + 250 + 300 + 30)
    before_drift = await drift(conn)
    assert before_drift == [(m, 2, True) for m in MONTHS], before_drift

    applied = await migrate(conn)  # the rest, the real package directory
    assert "0009" in applied
    after = await conn.fetch(ALL_ROWS)
    assert after == before  # every row, every column, identical
    assert await drift(conn) == before_drift
    assert await conn.fetchval("SELECT relkind FROM pg_class WHERE relname = 'ingest_idempotency'") == b"p"
    months = await partitions.partition_months(conn)
    assert set(MONTHS) <= set(months)
    now = datetime.now(UTC)
    assert set(partitions.ahead_months(now)) <= set(months)  # the window plus two months ahead
    for m in MONTHS:  # each row sits in its own month's partition
        part = "ingest_idempotency_p" + m.strftime("%Y_%m")
        n = await conn.fetchval(f"SELECT count(*) FROM {part} WHERE usage_month <> $1", m)
        assert n == 0
        assert await conn.fetchval(f"SELECT count(*) FROM {part}") > 0
    pk = await conn.fetchval(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'ingest_idempotency'::regclass"
        " AND contype = 'p'"
    )
    assert pk == "PRIMARY KEY (site_id, event_id, usage_month)"
    assert await conn.fetchval("SELECT to_regclass('ingest_idempotency_billing')") is None
    assert await conn.fetchval("SELECT count(*) FROM billing_voids") == 1
    assert await migrate(conn) == []  # idempotent
    assert [m.version for m in discover()][-1] >= "0009"


async def test_ensure_partition_refuses_a_day_and_an_archived_month(empty_db: asyncpg.Connection) -> None:
    await migrate(empty_db)
    with pytest.raises(asyncpg.PostgresError, match="not the first day"):
        await empty_db.fetchval("SELECT ledger_ensure_partition('2026-01-02')")
    assert await empty_db.fetchval("SELECT ledger_ensure_partition('2001-01-01')") is True
    assert await empty_db.fetchval("SELECT ledger_ensure_partition('2001-01-01')") is False
    await empty_db.execute(
        "INSERT INTO ledger_archives (month, location, rows, file_sha256, manifest)"
        " VALUES ('2001-02-01', '/x', 0, repeat('0', 64), '{}')"
    )
    with pytest.raises(asyncpg.PostgresError, match="2001-02 is archived"):
        await empty_db.fetchval("SELECT ledger_ensure_partition('2001-02-01')")


def test_dedupe_scope_months() -> None:
    """The months a copy is looked up in: from month(received - 35 d) to month(now + 5 min)."""
    r = datetime(2026, 3, 1, 0, 0, 1, tzinfo=UTC)  # 35 days before: 2026-01-25
    assert partitions.dedupe_months(date(2026, 3, 1), r, r) == (date(2026, 1, 1), date(2026, 3, 1))
    r = datetime(2026, 3, 31, 23, 56, tzinfo=UTC)  # 5 minutes ahead: April
    assert partitions.dedupe_months(date(2026, 3, 1), r, r) == (date(2026, 2, 1), date(2026, 4, 1))
    assert len(partitions.acceptance_months(r)) == 3
    r = datetime(2026, 3, 15, tzinfo=UTC)
    assert partitions.acceptance_months(r) == [date(2026, 2, 1), date(2026, 3, 1)]
    # a backlog: received in January, ledgered in March: January's window up to March
    assert partitions.dedupe_months(date(2026, 1, 1), datetime(2026, 1, 20, tzinfo=UTC), r) == (
        date(2025, 12, 1),
        date(2026, 3, 1),
    )
    # at most three months whenever the worker is current, over every minute-ish of a leap year
    t = datetime(2028, 1, 1, tzinfo=UTC)
    while t < datetime(2029, 1, 1, tzinfo=UTC):
        assert 1 <= len(partitions.acceptance_months(t)) <= 3
        t += timedelta(minutes=7)


# ------------------------------------------------------------------ through the real worker


pipeline = pipeline_fixture("worker", "relay", "audit")  # events are produced straight to the topic


async def rows_of(pool: asyncpg.Pool, site: uuid.UUID) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT event_id, usage_month, billing_month FROM ingest_idempotency WHERE site_id = $1"
        " ORDER BY event_id, usage_month",
        site,
    )


async def billed(pool: asyncpg.Pool, site: uuid.UUID) -> int:
    return int(
        await pool.fetchval(
            "SELECT coalesce(sum(events), 0) FROM site_usage_monthly WHERE site_id = $1", site
        )
    )


async def sentinel(settings: Settings, pool: asyncpg.Pool, site: uuid.UUID, n: int) -> None:
    """Send a marker event after the copies and wait for it: every copy before it was processed."""
    produce(settings, [(str(site).encode(), message(site, f"sentinel-{n}"))])

    async def seen() -> bool:
        return bool(
            await pool.fetchval(
                "SELECT 1 FROM ingest_idempotency WHERE site_id = $1 AND event_id = $2", site, f"sentinel-{n}"
            )
        )

    await wait_for(seen, 30.0, what=f"sentinel-{n} ledgered")


@pytest.mark.parametrize("order", ["older-first", "newer-first"])
async def test_same_event_id_with_a_time_in_another_month_is_billed_once(
    settings: Settings, pool: asyncpg.Pool, pipeline: Pipeline, order: str
) -> None:
    async with pool.acquire() as conn:
        site = (await sites.create_site(conn, f"pb-{uuid.uuid4().hex[:6]}")).site_id
    now = datetime.now(UTC)
    this = now.date().replace(day=1)
    last_of_previous = month_start(this) - timedelta(microseconds=100)  # 23:59:59.9999 of the last day
    first_of_this = month_start(this) + timedelta(microseconds=100)
    key = str(site).encode()
    older = message(site, "midnight", occurred_at=last_of_previous, received_at=now)
    newer = message(site, "midnight", occurred_at=first_of_this, received_at=now)
    copies = [older, newer] if order == "older-first" else [newer, older]
    # one batch each: the second copy must find the first across the partition boundary
    produce(settings, [(key, copies[0])])
    await sentinel(settings, pool, site, 1)
    produce(settings, [(key, copies[1]), (key, copies[0])])  # the other month, then an exact retry
    await sentinel(settings, pool, site, 2)
    rows = [r for r in await rows_of(pool, site) if r["event_id"] == "midnight"]
    first_month = previous_month(this) if order == "older-first" else this
    # one row, in the month of the copy ledgered first (billed there, or in the first open month
    # when another test of the session closed it)
    assert [r["usage_month"] for r in rows] == [first_month]
    assert await billed(pool, site) == 3  # midnight once + two sentinels


async def test_copies_in_two_months_in_one_batch_are_billed_once(
    settings: Settings, pool: asyncpg.Pool, pipeline: Pipeline
) -> None:
    async with pool.acquire() as conn:
        site = (await sites.create_site(conn, f"pb-{uuid.uuid4().hex[:6]}")).site_id
    now = datetime.now(UTC)
    this = now.date().replace(day=1)
    key = str(site).encode()
    produce(
        settings,
        [
            (
                key,
                message(site, "twice", occurred_at=month_start(this) - timedelta(seconds=1), received_at=now),
            ),
            (key, message(site, "twice", occurred_at=month_start(this))),
        ],
    )
    await sentinel(settings, pool, site, 1)
    assert [r["usage_month"] for r in await rows_of(pool, site) if r["event_id"] == "twice"] == [
        previous_month(this)
    ]
    assert await billed(pool, site) == 2


async def test_an_id_reused_after_its_month_left_the_window_is_a_new_event(
    settings: Settings, pool: asyncpg.Pool, pipeline: Pipeline
) -> None:
    """The defined edge of the dedupe scope: a copy whose month the gateway would no longer accept
    when the new one was received (older than month(received - 35 days)) is another event."""
    async with pool.acquire() as conn:
        site = (await sites.create_site(conn, f"pb-{uuid.uuid4().hex[:6]}")).site_id
        now = datetime.now(UTC)
        old = previous_month(previous_month(partitions.month_of(now - timedelta(days=35))))
        await conn.fetchval("SELECT ledger_ensure_partition($1)", old)
        await conn.execute(
            "INSERT INTO ingest_idempotency (site_id, event_id, event_type, occurred_at, usage_month,"
            " billing_month, quantity, billing_class, path, received_at) VALUES"
            " ($1, 'reused', 't', $2, $3, $3, 1, 'included', 'kafka', $2)",
            site,
            month_start(old),
            old,
        )
    produce(settings, [(str(site).encode(), message(site, "reused", received_at=now))])
    await sentinel(settings, pool, site, 1)
    months = [r["usage_month"] for r in await rows_of(pool, site) if r["event_id"] == "reused"]
    assert months == [old, now.date().replace(day=1)]


async def test_an_event_whose_month_has_no_partition_gets_one(
    settings: Settings, pool: asyncpg.Pool, pipeline: Pipeline
) -> None:
    async with pool.acquire() as conn:
        site = (await sites.create_site(conn, f"pb-{uuid.uuid4().hex[:6]}")).site_id
    # a month no partition exists for (the worker only sees decoded messages: a producer writing to
    # the topic directly can send any time; the gateway's own window is months around today)
    far = date(2031, 7, 1)
    async with pool.acquire() as conn:
        assert far not in await partitions.partition_months(conn)
    produce(settings, [(str(site).encode(), message(site, "far", occurred_at=month_start(far)))])
    await sentinel(settings, pool, site, 1)
    assert [r["usage_month"] for r in await rows_of(pool, site) if r["event_id"] == "far"] == [far]
    async with pool.acquire() as conn:
        made = await partitions.partition_months(conn)
    assert {far, next_month(far), next_month(next_month(far))} <= set(made)
