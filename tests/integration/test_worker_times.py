"""The times a message carries are the times the ledger holds, to the microsecond (issue 35: the
batch's COPY sends occurred_at and received_at as microseconds since 1970, which insert_ledger
turns back into timestamptz): from 35 days before 1970 to the end of October 9999 (the times the
worker takes, message.py), either side of 1970 and of 2000, past 2^53 microseconds, offsets other
than UTC, times without microseconds, random ones; and the replay finds every row
(ledgered_copies joins on the same integers)."""

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
    datetime(1970, 1, 1, tzinfo=UTC),  # the earliest a worker takes: occurred_at before 1970 is then < 0
    datetime(2000, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
    datetime(2255, 6, 5, 23, 47, 34, 740991, tzinfo=UTC),  # about 2^53 microseconds after 1970
    datetime(2300, 6, 15, 12, 34, 56, 789123, tzinfo=UTC),  # past 2^53 microseconds, odd
    datetime(9999, 10, 31, 23, 59, 59, 999999, tzinfo=UTC),  # the latest a worker takes
]
BEFORE, AFTER = timedelta(days=35, seconds=1), timedelta(minutes=5, seconds=1)  # message.py's window


def times(rng: random.Random) -> list[tuple[datetime, datetime]]:
    """(occurred_at, received_at) pairs within the window the worker takes (message.py): each
    received_at with its window's edges, times either side of it, and random ones."""
    out = []
    for r in RECEIVED:
        out += [(t, r) for t in (r - BEFORE, r - timedelta(microseconds=1), r, r + AFTER)]
        span = (BEFORE + AFTER) // timedelta(microseconds=1)
        out += [(r - BEFORE + timedelta(microseconds=rng.randrange(span)), r) for _ in range(6)]
    now = RECEIVED[0]
    out += [
        (datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), RECEIVED[1]),
        ((now - timedelta(hours=3)).astimezone(timezone(timedelta(hours=5, minutes=45))), now),
        ((now - timedelta(hours=1)).astimezone(timezone(timedelta(hours=-12))).replace(microsecond=0), now),
    ]
    return out


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
        raws = [message(site, f"t-{i}", t, r) for i, (t, r) in enumerate(at)]
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
        for i, (t, r) in enumerate(at):
            assert rows[f"t-{i}"] == (t, r), (i, t, r)
        again = await ledger.write_batch(conn, "t", "t:1", events, [])  # type: ignore[arg-type]
        assert (again.new, again.duplicates) == (0, len(events))
        assert sorted(m[2] for m in again.billable) == sorted(f"t-{i}" for i in range(len(at)))


def test_micros_is_exact() -> None:
    assert micros(datetime(1970, 1, 1, tzinfo=UTC)) == 0
    assert micros(datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)) == -1
    assert micros(datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)) == 253402300799999999
    assert micros(datetime(1, 1, 1, tzinfo=UTC)) == -62135596800000000
