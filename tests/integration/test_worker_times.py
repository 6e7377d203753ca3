"""The times a message carries are the times the ledger holds, to the microsecond (issue 35: the
batch's COPY sends occurred_at and received_at as microseconds since 1970, which insert_ledger
turns back into timestamptz): year 2's first microsecond and the last one Python can hold, either
side of 1970 and of 2000, past 2^53 microseconds, offsets other than UTC, times without
microseconds, random ones; and the replay finds every row (ledgered_copies joins on the same
integers)."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta, timezone

import asyncpg
import orjson
import pytest
from opsmantik import sites
from opsmantik.config import Settings
from opsmantik.worker import ledger
from opsmantik.worker.message import IngestEvent, decode, micros

pytestmark = pytest.mark.integration

RECEIVED = [
    datetime.now(UTC),
    datetime(1970, 1, 1, tzinfo=UTC) - timedelta(microseconds=1),
    datetime(2000, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
    datetime(2300, 6, 15, 12, 34, 56, 789123, tzinfo=UTC),  # past 2^53 microseconds, odd
]


def times(rng: random.Random) -> list[datetime]:
    fixed = [
        # year 1's partition: ledger_ensure_partition fails on it once it exists (a NULL name),
        # with or without this change; year 2 is the earliest here
        datetime(2, 1, 1, 0, 0, 0, 0, tzinfo=UTC),
        datetime(2, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(1970, 1, 1, 0, 0, 0, 0, tzinfo=UTC),
        datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
        datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2000, 1, 1, tzinfo=UTC),
        datetime(2255, 6, 5, 23, 47, 34, 740991, tzinfo=UTC),  # about 2^53 microseconds after 1970
        datetime(2026, 12, 7, 8, 0, 0, 123456, tzinfo=timezone(timedelta(hours=5, minutes=45))),
        datetime(2026, 12, 7, 8, 0, tzinfo=timezone(timedelta(hours=-12))),
    ]
    start, end = datetime(2, 1, 2, tzinfo=UTC), datetime(9999, 12, 30, tzinfo=UTC)
    span = micros(end) - micros(start)
    return fixed + [start + timedelta(microseconds=rng.randrange(span)) for _ in range(40)]


def message(site: uuid.UUID, event_id: str, occurred: datetime, received: datetime) -> bytes:
    utc = occurred.astimezone(UTC)
    return orjson.dumps(
        {
            "v": 1,
            "site_id": str(site),
            "event_id": event_id,
            "type": "t",
            "occurred_at": occurred.isoformat(timespec="microseconds")
            if occurred.microsecond or event_id.endswith("0")
            else occurred.isoformat(),
            "usage_month": utc.date().replace(day=1).isoformat(),
            "quantity": 1,
            "received_at": received.isoformat(timespec="microseconds"),
            "path": "kafka",
            "gateway_status": "accepted",
        }
    )


async def test_the_ledger_holds_the_messages_times_to_the_microsecond(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    rng = random.Random(35)
    async with pool.acquire() as conn:
        site = (await sites.create_site(conn, f"times-{uuid.uuid4().hex[:6]}")).site_id
        at = times(rng)
        raws = [message(site, f"t-{i}", t, RECEIVED[i % len(RECEIVED)]) for i, t in enumerate(at)]
        events = [decode(r, 0, i) for i, r in enumerate(raws)]
        assert all(isinstance(e, IngestEvent) for e in events), [
            e for e in events if not isinstance(e, IngestEvent)
        ]
        first = await ledger.write_batch(conn, "t", "t:1", events, [])  # type: ignore[arg-type]
        assert (first.new, first.dead_letters) == (len(events), 0)
        rows = {
            r["event_id"]: (r["occurred_at"], r["received_at"])
            for r in await conn.fetch(
                "SELECT event_id, occurred_at, received_at FROM ingest_idempotency WHERE site_id = $1", site
            )
        }
        for i, t in enumerate(at):
            assert rows[f"t-{i}"] == (t, RECEIVED[i % len(RECEIVED)]), (i, t)
        again = await ledger.write_batch(conn, "t", "t:1", events, [])  # type: ignore[arg-type]
        assert (again.new, again.duplicates) == (0, len(events))
        assert sorted(m[2] for m in again.billable) == sorted(f"t-{i}" for i in range(len(at)))


def test_micros_is_exact() -> None:
    assert micros(datetime(1970, 1, 1, tzinfo=UTC)) == 0
    assert micros(datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)) == -1
    assert micros(datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)) == 253402300799999999
    assert micros(datetime(1, 1, 1, tzinfo=UTC)) == -62135596800000000
