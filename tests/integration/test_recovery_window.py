"""The window for outbox rows without a standby (docs/reliability.md "When the database is lost"):
on a private stack with no standby and `archive_timeout` = 5 s, outbox rows are committed (as the
gateway's fallback path writes them) at a steady pace; the disk is lost (SIGKILL, data directory
deleted); `restore` to the newest restorable point. Every row committed before that point is
back; the rows lost are exactly the ones committed after it, and they span at most
`archive_timeout` plus a second — the documented window, measured (printed) and bounded.

Planted: no `archive_timeout` (WINDOW_PLANT=1: 0, PostgreSQL archives a segment only once 16 MB
are written) → every row written after the backup is lost, a 12 s window: the test fails."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import asyncpg
import pytest
from opsmantik import sites
from opsmantik.db.migrate import migrate
from opsmantik.devstack.stack import Stack
from opsmantik.recovery import backup

from tests.integration.test_recovery import destroy
from tests.support.pipeline import message
from tests.support.stacks import private_stack

pytestmark = [
    pytest.mark.integration,
    pytest.mark.own_stack,
    pytest.mark.skipif(os.environ.get("OPSMANTIK_DR") != "1", reason="long form: make dr"),
]
ARCHIVE_TIMEOUT_S = 5
WRITE_S = 12.0
INSERT = (
    "INSERT INTO ingest_fallback_buffer (site_id, event_id, payload, received_at) "
    "SELECT $1::uuid, e, p, $4::timestamptz FROM unnest($2::text[], $3::bytea[]) AS t (e, p)"
)


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with private_stack("outbox-window") as made:
        planted = os.environ.get("WINDOW_PLANT") == "1"
        paced = dataclasses.replace(made, archive_timeout_s=0 if planted else ARCHIVE_TIMEOUT_S)
        paced.pg_up()  # Postgres only: the rows never leave the outbox (Kafka is "down")
        yield paced


async def write_rows(url: str, site: uuid.UUID, seconds: float) -> dict[str, datetime]:
    """One outbox batch of one row every 20 ms; each row's commit time (after COMMIT returned)."""
    committed: dict[str, datetime] = {}
    conn = await asyncpg.connect(url)
    try:
        stop_at = time.monotonic() + seconds
        i = 0
        while time.monotonic() < stop_at:
            i += 1
            e, now = f"w-{i}", datetime.now(UTC)
            await conn.execute(INSERT, site, [e], [message(site, e, path="fallback", received_at=now)], now)
            committed[e] = datetime.now(UTC)
            await asyncio.sleep(0.02)  # the pace, not a wait for a condition
    finally:
        await conn.close()
    return committed


async def test_outbox_rows_lost_with_the_disk_are_those_after_the_newest_archived_wal(stack: Stack) -> None:
    conn = await asyncpg.connect(stack.database_url)
    await migrate(conn)
    site = (await sites.create_site(conn, "window")).site_id
    await conn.close()
    backup.take_backup(stack)
    committed = await write_rows(stack.database_url, site, WRITE_S)
    lost_at = datetime.now(UTC)
    await asyncio.to_thread(destroy, stack)
    point = backup.newest_restorable(stack)
    assert point is not None
    await asyncio.to_thread(backup.restore, stack, point)

    conn = await asyncpg.connect(stack.database_url)
    try:
        rows = await conn.fetch("SELECT event_id FROM ingest_fallback_buffer WHERE site_id = $1", site)
    finally:
        await conn.close()
    kept = {r["event_id"] for r in rows}
    lost = set(committed) - kept
    assert kept <= set(committed)
    assert all(committed[e] > point for e in lost), "a row committed before the restore point is missing"
    window = (lost_at - min((committed[e] for e in lost), default=lost_at)).total_seconds()
    print(
        f"\noutbox rows without a standby: {len(committed)} committed, {len(lost)} lost with the disk; "
        f"window {window:.2f} s (archive_timeout {stack.archive_timeout_s} s); restore point "
        f"{(lost_at - point).total_seconds():.2f} s before the loss"
    )
    allowed = ARCHIVE_TIMEOUT_S + 1.0
    assert window <= allowed, f"lost {len(lost)} rows over {window:.2f} s, more than {allowed} s"
    assert kept, "the restore reached no row past the backup"
