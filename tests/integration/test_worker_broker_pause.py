"""The broker SIGSTOPped past the worker's session timeout (10 s), then SIGCONTed, while events
flow: every event whose produce was acknowledged, and every outbox row written meanwhile, must
reach the ledger. The worker loses its group membership (its in-flight OffsetCommit fails with
UnknownMemberIdError) and rejoins while a fetch waits; before the fix (docs/worker.md
"Rebalances") the records that fetch returned were dropped, the fetch position stayed past them and
the commit guard committed over them: 3 to 1,000 acknowledged events never ledgered, in 1 of 1-5
pauses on this 2-core machine (the failure test_key_flood.py reported as "acknowledged events not
in the ledger"). The deterministic regression is tests/unit/test_worker_handoff.py; this soak
needs minutes, so it runs only when asked:

    OPSMANTIK_BROKER_PAUSE_ROUNDS=5 .venv/bin/pytest -s tests/integration/test_worker_broker_pause.py
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
import uuid
from pathlib import Path

import asyncpg
import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from opsmantik.config import Settings
from opsmantik.devstack.stack import Stack
from opsmantik.kafka.settings import producer_config

from tests.support.pipeline import env_for, insert_outbox, message, new_site_id
from tests.support.process import Process
from tests.support.stacks import stack_fixture, stack_settings

ROUNDS = int(os.environ.get("OPSMANTIK_BROKER_PAUSE_ROUNDS", "0"))
PAUSE_S = 25  # past the 10 s session timeout and the billable publish's 15 s message timeout
LOAD_S = 5.0  # events produced directly before each pause
OUTBOX_PER_S = 50  # outbox rows written per second of the pause (the gateway's fallback path)
CATCH_UP_S = 40.0  # measured with the fix: every round caught up within 2 s of the SIGCONT

stack = stack_fixture("worker-pause")
pytestmark = [
    pytest.mark.own_stack,  # a private stack: make test's own-stack lane (scripts/test.sh)
    pytest.mark.skipif(not ROUNDS, reason="a soak of minutes: OPSMANTIK_BROKER_PAUSE_ROUNDS=N runs it"),
]


async def ledgered(url: str, site: uuid.UUID) -> set[str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT event_id FROM ingest_idempotency WHERE site_id = $1", site)
    finally:
        await conn.close()
    return {r["event_id"] for r in rows}


def load(settings: Settings, site: uuid.UUID, tag: str, stop: threading.Event, acked: set[str]) -> None:
    """Produce until `stop`, then wait for the reports (the broker may be stopped meanwhile)."""
    p = Producer(producer_config(settings, **{"message.timeout.ms": 120000}))
    i = 0
    while not stop.is_set():
        eid = f"{tag}-{i}"
        p.produce(
            settings.topic,
            message(site, eid),
            f"{site}/{eid}".encode(),
            on_delivery=lambda err, _m, eid=eid: None if err else acked.add(eid),
        )
        p.poll(0)
        i += 1
        time.sleep(0.005)
    p.flush(150)


def where(settings: Settings, missing: set[str]) -> str:
    """The group's committed offsets, the log ends and where the missing events are in the log."""
    conf = {"bootstrap.servers": settings.kafka_bootstrap, "enable.auto.commit": False}
    tps = [TopicPartition(settings.topic, p) for p in range(settings.topic_partitions)]
    c = Consumer({**conf, "group.id": settings.worker_group})
    committed = {tp.partition: tp.offset for tp in c.committed(tps, 10)}
    ends = {tp.partition: c.get_watermark_offsets(tp, 10)[1] for tp in tps}
    c.close()
    c = Consumer({**conf, "group.id": f"diag-{uuid.uuid4()}"})
    c.assign([TopicPartition(settings.topic, p, 0) for p in ends])
    found: dict[int, list[int]] = {}
    seen, deadline = 0, time.monotonic() + 30
    while seen < sum(ends.values()) and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is None or m.error():
            continue
        seen += 1
        if orjson.loads(m.value())["event_id"] in missing:
            found.setdefault(m.partition(), []).append(m.offset())
    c.close()
    spans = {p: (min(o), max(o), len(o)) for p, o in found.items()}
    return f"committed {committed}, log ends {ends}, missing at (first, last, n) {spans}"


async def test_no_acknowledged_event_lost_when_the_broker_pauses_past_the_session_timeout(
    stack: Stack, base_settings: Settings, tmp_path: Path
) -> None:
    settings = await stack_settings(base_settings, stack, topic_partitions=2)
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=3)
    site = await new_site_id(pool)
    worker = Process.opsmantik("worker", ["worker"], env_for(settings), tmp_path).start()
    relay = Process.opsmantik("relay", ["relay"], env_for(settings), tmp_path).start()
    try:
        for rnd in range(ROUNDS):
            acked: set[str] = set()
            stop = threading.Event()
            producer = threading.Thread(target=load, args=(settings, site, f"r{rnd}", stop, acked))
            producer.start()
            await asyncio.sleep(LOAD_S)
            broker = stack.kafka_pid()
            assert broker
            os.kill(broker, signal.SIGSTOP)
            stop.set()
            t0 = time.monotonic()
            outbox: set[str] = set()
            try:
                for k in range(PAUSE_S):
                    rows = [f"r{rnd}-o{k}-{i}" for i in range(OUTBOX_PER_S)]
                    await insert_outbox(pool, site, rows)
                    outbox.update(rows)
                    await asyncio.sleep(max(0.0, t0 + k + 1 - time.monotonic()))
            finally:
                os.kill(broker, signal.SIGCONT)
            resumed = time.monotonic()
            await asyncio.to_thread(producer.join, 160)
            want = acked | outbox
            while missing := want - await ledgered(settings.database_url, site):
                if time.monotonic() - resumed > CATCH_UP_S:
                    depth = await pool.fetchval("SELECT count(*) FROM ingest_fallback_buffer")
                    raise AssertionError(
                        f"round {rnd}: {len(missing)} of {len(want)} events not ledgered {CATCH_UP_S:.0f} s "
                        f"after the SIGCONT ({len(missing & acked)} produced, {len(missing & outbox)} "
                        f"outbox; {depth} outbox rows left; "
                        f"{await asyncio.to_thread(where, settings, missing)})\n{worker.tail(40)}"
                    )
                await asyncio.sleep(0.5)
            print(
                f"\nround {rnd}: {len(want)} events ledgered {time.monotonic() - resumed:.1f} s after SIGCONT"
            )
    finally:
        worker.stop()
        relay.stop()
        await pool.close()
