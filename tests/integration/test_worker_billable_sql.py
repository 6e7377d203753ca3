"""The billable messages Postgres formats (worker/ledger.sql billable_messages, issue 28) are, byte
for byte, what the Python reference makes of the same ledger rows: `billable.to_billable` for the
value, `billable.ce_headers` for the CloudEvents headers, str(site_id) for the key. Rows with the
awkward values a topic message may carry (every control character and JSON's escapes in `type`,
non-ASCII, NULL partition and offset, properties of every JSON kind, CloudEvents subjects and
lookalikes, times with and without microseconds), new and replayed, through the worker's own
`write_batch` and `BillablePublisher.publish`, on the real Postgres and Kafka."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition
from opsmantik import sites
from opsmantik.config import Settings
from opsmantik.gateway.cloudevents import ledger_event_id
from opsmantik.worker import ledger
from opsmantik.worker.billable import (
    BillablePublisher,
    PublishError,
    _iso,
    ce_headers,
    ce_source,
    to_billable,
)
from opsmantik.worker.message import IngestEvent, decode

from tests.support.environment import module_environment
from tests.support.process import free_port

pytestmark = pytest.mark.integration

settings, pool = module_environment()

CONTROL = "".join(chr(c) for c in range(1, 32))


def doc(site: uuid.UUID, event_id: str, **fields: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    occurred = fields.pop("occurred", now - timedelta(seconds=1))
    received = fields.pop("received", now)
    return {
        "v": 1,
        "site_id": str(site),
        "event_id": event_id,
        "type": "api_call",
        "occurred_at": occurred.isoformat(timespec="microseconds"),
        "usage_month": occurred.date().replace(day=1).isoformat(),
        "quantity": 1,
        "received_at": received.isoformat(timespec="microseconds"),
        "path": "kafka",
        "gateway_status": "accepted",
        **fields,
    }


def awkward(site: uuid.UUID) -> list[dict[str, Any]]:
    whole = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=2)
    subject = {"ce": {"id": "1", "source": "s", "subject": 'customer ☃ "1"\n'}, "data": {"x": 1}}
    return [
        doc(site, "plain"),
        doc(site, "ctl", type=CONTROL[:31] + '"\\'),
        doc(site, "ctl2", type="\x7f/<>&'é😀\u2028\u2029\ufeff"),
        doc(site, "longtype", type="t" * 64, quantity=1_000_000_000_000),
        doc(site, "whole", occurred=whole, received=whole),
        doc(site, "fallback", path="fallback", gateway_status="fallback"),
        doc(site, "props", properties={"a": [1, 1.5, -0.0, 1e300, True, None, '\u0001"é'], "b": {"c": {}}}),
        doc(site, "empty-props", properties={}),
        doc(site, "subject", subject="cust-1"),
        doc(site, ledger_event_id("src", "with-subject"), properties=subject),
        doc(site, ledger_event_id("src", "subject-number"), properties={"ce": {"subject": 5}}),
        doc(site, ledger_event_id("src", "ce-not-object"), properties={"ce": [1]}),
        doc(site, ledger_event_id("src", "no-props")),
        doc(site, "ce-lookalike", properties={"ce": {"subject": "x"}}),
    ]


class Recorder:
    """A producer that records what the publisher hands it and reports every message delivered."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, bytes, list[tuple[str, bytes]]]] = []

    def poll(self, timeout: float) -> int:  # every report is served at produce
        return 0

    def produce(self, topic: str, value: Any, key: Any, *, on_delivery: Any, headers: Any) -> None:
        as_bytes = [(k, v.encode() if isinstance(v, str) else v) for k, v in headers]
        self.sent.append((key.encode(), value.encode(), as_bytes))
        on_delivery(None, None)


async def ledger_twice(conn: asyncpg.Connection, site: uuid.UUID) -> list[ledger.BatchResult]:
    messages = [orjson.dumps(d) for d in awkward(site)]
    events = [decode(m, 2, 40 + i) for i, m in enumerate(messages)]
    assert all(isinstance(e, IngestEvent) for e in events), events
    first = await ledger.write_batch(conn, "t", "t:1", events, [])  # type: ignore[arg-type]
    again = await ledger.write_batch(conn, "t", "t:1", events, [])  # type: ignore[arg-type]
    assert (first.new, again.new, again.duplicates) == (len(events), 0, len(events))
    return [first, again]


async def reference(conn: asyncpg.Connection, site: uuid.UUID) -> dict[str, tuple[bytes, bytes, list[Any]]]:
    """The Python reference: ledger_rows read back, then to_billable and ce_headers."""
    events = [decode(orjson.dumps(d), 2, 40 + i) for i, d in enumerate(awkward(site))]
    unique = [e for e in events if isinstance(e, IngestEvent)]
    rows = await ledger.read_back_rows(conn, unique, ledger.dedupe_scope(unique, datetime.now(UTC)))
    assert len(rows) == len(unique)
    out = {}
    for r in rows:
        text = str(r.site_id)
        out[r.event_id] = (
            text.encode(),
            to_billable(r, text),
            ce_headers(r, ce_source(text), _iso(r.occurred_at)),
        )
    return out


async def test_postgres_formats_the_billable_messages_as_the_python_reference(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    async with pool.acquire() as conn:
        site = (await sites.create_site(conn, f"bsql-{uuid.uuid4().hex[:6]}", monthly_quota=3)).site_id
        results = await ledger_twice(conn, site)
        expected = await reference(conn, site)
    assert (
        sum(1 for v in expected.values() if orjson.loads(v[1])["billing_class"] == "overlimit")
        == len(expected) - 3
    )
    for result in results:  # the first (new rows) and the replay (rows already there)
        recorder = Recorder()
        publisher = BillablePublisher(settings)
        publisher._producer = recorder  # type: ignore[assignment]
        await publisher.publish(result.billable)
        got = {
            orjson.loads(value)["event_id"]: (key, value, headers) for key, value, headers in recorder.sent
        }
        assert got.keys() == expected.keys()
        for event_id, (key, value, headers) in expected.items():
            assert got[event_id] == (key, value, headers), event_id
    subjects = {e: [v for k, v in h if k == "ce_subject"] for e, (_, _, h) in expected.items()}
    assert subjects[ledger_event_id("src", "with-subject")] == ['customer ☃ "1"\n'.encode()]
    assert sum(len(s) for s in subjects.values()) == 1  # the planted lookalikes have none


def consume(settings: Settings, site: uuid.UUID, n: int) -> list[tuple[bytes, bytes, list[Any]]]:
    c = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"t-{uuid.uuid4()}"})
    c.assign([TopicPartition(settings.billable_topic, p, 0) for p in range(settings.topic_partitions)])
    out = []
    deadline = time.monotonic() + 30
    try:
        while len(out) < n and time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is None or msg.error() or msg.key() != str(site).encode():
                continue
            out.append((msg.key(), msg.value(), msg.headers()))
    finally:
        c.close()
    return out


async def test_the_published_bytes_on_kafka_are_the_reference_bytes(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    """The producer is handed text (the key, value and header values as Postgres returned them):
    what reaches the topic is their UTF-8, the reference's bytes."""
    async with pool.acquire() as conn:
        site = (await sites.create_site(conn, f"bkafka-{uuid.uuid4().hex[:6]}")).site_id
        first, _ = await ledger_twice(conn, site)
        expected = await reference(conn, site)
    publisher = BillablePublisher(settings)
    try:
        await publisher.publish(first.billable)
    finally:
        await publisher.close()
    got = await asyncio.to_thread(consume, settings, site, len(expected))
    assert len(got) == len(expected)
    for key, value, headers in got:
        assert (key, value, headers) == expected[orjson.loads(value)["event_id"]]


async def test_a_publish_fails_when_a_report_is_an_error_and_counts_only_its_own(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    """Reports are served on the loop, each publish counting its own queue: a message refused up
    front (too large) and a broker that never answers both fail the publish (PublishError: the
    worker retries and never acks), and a good publish beside a failing one still completes."""
    async with pool.acquire() as conn:
        site = (await sites.create_site(conn, f"bfail-{uuid.uuid4().hex[:6]}")).site_id
        first, _ = await ledger_twice(conn, site)
    good = first.billable
    huge = [(*good[0][:1], "x" * 2_000_000, *good[0][2:])]
    publisher = BillablePublisher(settings)
    try:
        with pytest.raises(PublishError, match="1 of 2 billable messages failed"):
            await publisher.publish([*huge, good[1]])
        ok, bad = await asyncio.gather(
            publisher.publish(good), publisher.publish(huge), return_exceptions=True
        )
        assert ok is None and isinstance(bad, PublishError)
    finally:
        await publisher.close()
    dead = dataclasses.replace(settings, kafka_bootstrap=f"127.0.0.1:{free_port()}")
    nowhere = BillablePublisher(dead, message_timeout_ms=1500)
    try:
        started = time.monotonic()
        with pytest.raises(PublishError, match=f"{len(good)} of {len(good)} billable messages failed"):
            await nowhere.publish(good)
        assert time.monotonic() - started < 10
    finally:
        await nowhere.close(timeout_s=1)
