"""The database is lost (issue 29, docs/runbook.md "Database lost"): on a private stack (its
Postgres is killed and its data directory deleted), `opsmantik backup`'s base backup and the WAL
archive restore the database to the backup's time, and `opsmantik recover` rewinds the worker's
group so the ledger is rebuilt from the topic: every acknowledged event exactly once, reconcile
and audit clean. Then `recover` again changes nothing, refuses while the worker runs, and refuses
naming the partition once the topic's retention no longer reaches back.

Events are acknowledged through Kafka (acks=all, the gateway's Kafka path); the outbox path
without a standby has the window docs/reliability.md states (rows committed after the newest
archived WAL are lost with the disk)."""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import orjson
import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient
from opsmantik import sites
from opsmantik.config import Settings
from opsmantik.devstack.stack import Stack
from opsmantik.recovery import backup

from tests.support.pipeline import OPSMANTIK, Pipeline, env_for, message, produce, wait_for
from tests.support.process import wait_until
from tests.support.stacks import private_stack, stack_settings

pytestmark = [pytest.mark.integration, pytest.mark.own_stack]
MONTH = datetime.now(UTC).strftime("%Y-%m")


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with private_stack("recovery") as made:
        # WAL reaches the archive within 1 s under traffic (the stack's default is 60 s).
        fast = dataclasses.replace(made, archive_timeout_s=1)
        fast.up()
        yield fast


def cli(settings: Settings, *args: str) -> tuple[int, str]:
    done = subprocess.run(
        [OPSMANTIK, *args], env=env_for(settings), capture_output=True, timeout=120, text=True
    )
    return done.returncode, done.stdout + done.stderr


def send(settings: Settings, site: uuid.UUID, ids: list[str]) -> None:
    """Acknowledged through Kafka: produce with acks=all and wait for every delivery report."""
    produce(settings, [(f"{site}/{e}".encode(), message(site, e)) for e in ids])


async def ledger_ids(settings: Settings, site: uuid.UUID) -> list[str]:
    conn = await asyncpg.connect(settings.database_url)
    try:
        rows = await conn.fetch("SELECT event_id FROM ingest_idempotency WHERE site_id = $1", site)
    finally:
        await conn.close()
    return sorted(r["event_id"] for r in rows)


async def ledger_holds(settings: Settings, site: uuid.UUID, n: int) -> None:
    async def check() -> bool:
        try:
            return len(await ledger_ids(settings, site)) >= n
        except (OSError, asyncpg.PostgresError):
            return False

    await wait_for(check, 150, what=f"{n} ledger rows")  # a worker start on a loaded host


def caught_up(settings: Settings) -> bool:
    """The worker group has committed every partition's end offset."""
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    parts = list(admin.list_topics(settings.topic, timeout=10).topics[settings.topic].partitions)
    req = [
        ConsumerGroupTopicPartitions(
            settings.worker_group, [TopicPartition(settings.topic, p) for p in parts]
        )
    ]
    (res,) = [f.result() for f in admin.list_consumer_group_offsets(req).values()]
    committed = {tp.partition: tp.offset for tp in res.topic_partitions}
    from confluent_kafka import Consumer

    c = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"probe-{uuid.uuid4()}"})
    try:
        ends = {p: c.get_watermark_offsets(TopicPartition(settings.topic, p), 10)[1] for p in parts}
    finally:
        c.close()
    return all(committed[p] == e for p, e in ends.items() if e > 0)


def destroy(stack: Stack) -> None:
    """The database's disk is gone: SIGKILL the server, delete its data directory."""
    pid = stack.pg_pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not stack.pg_status().running, 15, 0.1, "postgres dead")
    shutil.rmtree(stack.pg_data())


async def test_restore_then_recover_rebuilds_the_ledger_exactly_and_a_second_recover_changes_nothing(
    stack: Stack, base_settings: Settings, tmp_path: Path
) -> None:
    settings = await stack_settings(base_settings, stack, topic_partitions=3)
    conn = await asyncpg.connect(settings.database_url)
    site = (await sites.create_site(conn, "dr")).site_id
    await conn.close()
    p = Pipeline.start(settings, tmp_path, ("worker", "relay"))
    try:
        first = [f"a-{i}" for i in range(200)]
        sent_at = datetime.now(UTC)
        send(settings, site, first)
        await ledger_holds(settings, site, len(first))

        taken = backup.take_backup(stack)
        later = [f"b-{i}" for i in range(300)]
        send(settings, site, later)  # acknowledged after the backup: lost with the disk
        await ledger_holds(settings, site, len(first) + len(later))
        # The WAL past the backup's time must be archived for PITR to reach it (archive_timeout).
        wait_until(
            lambda: (backup.newest_archived(stack) or taken.finished) > taken.finished,
            30,
            0.2,
            "WAL archived",
        )
        p["worker"].stop()
        p["relay"].stop()
        destroy(stack)

        restored = backup.restore(stack, taken.finished)
        assert restored.path == taken.path
        assert await ledger_ids(settings, site) == sorted(first)  # the backup's state, nothing later

        since = taken.finished.isoformat()
        code, out = cli(settings, "recover", "--since", since, "--margin-s", "60")
        assert code == 0, out
        p.start_one("relay")
        p.start_one("worker")
        await ledger_holds(settings, site, len(first) + len(later))
        wait_until(lambda: caught_up(settings), 150, 0.3, "worker caught up")
        every = sorted(first + later)
        assert await ledger_ids(settings, site) == every  # exactly once: primary key + count
        code, out = cli(settings, "reconcile", "--month", MONTH)
        assert code == 0, out
        code, out = cli(settings, "audit", "--month", MONTH)
        assert code == 0, out

        # While the worker is a member of its group, recover refuses and names the group.
        code, out = cli(settings, "recover", "--since", since)
        assert code == 2 and settings.worker_group in out and "active" in out, out

        # A second recover: the worker replays everything since, the ledger dedupes it all.
        p["worker"].stop()
        code, out = cli(settings, "recover", "--since", sent_at.isoformat(), "--margin-s", "5", "--json")
        assert code == 0, out
        plan = orjson.loads(out)["partitions"]
        assert sum(x["replayed"] for x in plan if x["group"] == settings.worker_group) == 500, out
        p.start_one("worker")
        wait_until(lambda: caught_up(settings), 150, 0.3, "worker caught up again")
        assert await ledger_ids(settings, site) == every
        code, out = cli(settings, "reconcile", "--month", MONTH)
        assert code == 0, out

        # Retention: the first messages of a partition deleted; recover refuses, naming it.
        p["worker"].stop()
        admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
        (res,) = [f.result() for f in admin.delete_records([TopicPartition(settings.topic, 0, 1)]).values()]
        assert res.low_watermark == 1
        code, out = cli(settings, "recover", "--since", sent_at.isoformat(), "--margin-s", "5")
        assert code == 2 and f"{settings.topic}[0] starts at offset 1" in out, out
        assert "retention" in out
        p.start_one("worker")
    finally:
        p.stop()
