"""The capture audit against the real Kafka and Postgres, with a real worker process: a clean
run accounts for every message (hostile ones through the dead letters, not as breaches); each
planted loss is reported exactly, with exit 1 and the metric."""

from __future__ import annotations

import asyncio
import re
import subprocess
import uuid
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import asyncpg
import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition
from opsmantik.config import Settings

from tests.support.environment import module_environment
from tests.support.pipeline import (
    OPSMANTIK,
    Pipeline,
    env_for,
    ledgered,
    message,
    new_site_id,
    opsmantik_process,
    pipeline_fixture,
    produce,
    wait_for,
)

pytestmark = pytest.mark.integration
settings, pool = module_environment()
# No audit follower: the tests run the audit themselves (a follower would audit an event before a
# test deletes it, turning the planted "unaccounted" into "vanished").
pipeline = pipeline_fixture("worker", "relay")
MONTH = datetime.now(UTC).strftime("%Y-%m")


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("audit")


def audit(settings: Settings, *args: str, **env: object) -> tuple[int, dict, str]:
    done = subprocess.run(
        [OPSMANTIK, "audit", *args], env=env_for(settings, **env), capture_output=True, timeout=90, text=True
    )
    try:
        report = orjson.loads(done.stdout) if "--json" in args else {}
    except orjson.JSONDecodeError:
        report = {}
    return done.returncode, report, done.stdout + done.stderr


def site_row(report: dict, site: uuid.UUID | str) -> dict:
    return next(s for s in report["sites"] if s["site"] == str(site))


async def dead_letters(pool: asyncpg.Pool) -> int:
    return await pool.fetchval("SELECT count(*) FROM ingest_dead_letter")


async def test_clean_run_accounts_for_everything_hostile_messages_are_not_breaches(
    pipeline: Pipeline, settings: Settings, pool: asyncpg.Pool
) -> None:
    site = await new_site_id(pool)
    key = str(site).encode()
    valid = [(key, message(site, f"a-{i}", properties={"n": i})) for i in range(20)]
    gateway_shaped = orjson.loads(message(site, "bad-qty"))
    hostile = [
        (key, b"\x00\xff random bytes"),
        (key, None),
        (key, b"[1, 2]"),
        (key, b'{"v": 1, "event_id": "x"}'),
        (key, orjson.dumps({**gateway_shaped, "quantity": 0})),
        (None, b"no key, not json"),
    ]
    stranger = uuid.uuid4()  # valid message of a site that does not exist: dead-lettered, no breach
    strange = (str(stranger).encode(), message(stranger, "s-1"))
    produce(settings, [*valid[:10], *hostile, strange, *valid[10:]])
    await wait_for(ledgered(pool, site, 20), what="20 valid events ledgered")

    async def all_dead() -> bool:
        return await dead_letters(pool) == len(hostile) + 1

    await wait_for(all_dead, what="hostile messages dead-lettered")
    code, report, out = audit(settings, "--month", MONTH, "--json")
    assert code == 0, out
    assert report["ok"] and report["unaccounted"] == 0 and report["breaches"] == 0
    row = site_row(report, site)
    # 20 valid + 5 hostile with the site's key; the keyless one and the stranger's are elsewhere.
    assert (row["audited"], row["ledgered"], row["dead_lettered"], row["unaccounted"], row["breaches"]) == (
        25,
        20,
        5,
        0,
        0,
    )
    assert site_row(report, stranger)["dead_lettered"] == 1 and site_row(report, "")["dead_lettered"] == 1
    assert report["audited"] == 27 and report["ahead_of_worker"] == 0
    # A second run resumes from the stored progress: nothing is counted twice.
    code, again, out = audit(settings, "--month", MONTH, "--json")
    assert code == 0 and again["sites"] == report["sites"], out
    integrity = slo_report(settings)["objectives"]["integrity"]
    assert integrity["met"] and (integrity["audited"], integrity["unaccounted"]) == (27, 0), integrity


def slo_report(settings: Settings) -> dict:
    done = subprocess.run(
        [OPSMANTIK, "slo-report", "--month", MONTH, "--json"],
        env=env_for(settings),
        capture_output=True,
        timeout=60,
    )
    return orjson.loads(done.stdout)


async def scrape(port: int) -> dict[str, float]:
    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/metrics") as r:
        text = await r.text()
    return {
        k: float(v)
        for k, v in (line.rsplit(" ", 1) for line in text.splitlines() if line.startswith("opsmantik_audit_"))
    }


async def test_a_deleted_ledger_row_is_reported_exactly_with_exit_1_and_the_metric(
    pipeline: Pipeline, settings: Settings, pool: asyncpg.Pool, logs: Path
) -> None:
    site = await new_site_id(pool)
    produce(settings, [(str(site).encode(), message(site, f"b-{i}")) for i in range(5)])
    await wait_for(ledgered(pool, site, 5), what="5 events ledgered")
    lost = await pool.fetchrow(
        "DELETE FROM ingest_idempotency WHERE site_id = $1 AND event_id = 'b-3' "
        "RETURNING kafka_partition, kafka_offset",
        site,
    )
    code, report, out = audit(settings, "--month", MONTH, "--json")
    assert code == 1, out
    row = site_row(report, site)
    assert (row["audited"], row["ledgered"], row["unaccounted"], row["breaches"]) == (5, 4, 1, 0)
    assert [
        (f["kind"], f["event_id"], f["kafka_partition"], f["kafka_offset"]) for f in report["findings"]
    ] == [("unaccounted", "b-3", lost["kafka_partition"], lost["kafka_offset"])]
    code, _, text = audit(settings, "--month", MONTH)
    assert code == 1 and "UNACCOUNTED site " + str(site) + " event_id b-3" in text, text

    follower = opsmantik_process(
        settings, logs, "audit", "audit", "--follow", audit_metrics_port=0, audit_interval_s=0.5
    ).start()
    try:

        async def port_logged() -> bool:
            follower.check_alive()
            return "audit metrics on" in follower.log.read_text()

        await wait_for(port_logged, 20, 0.1, "the follower's metrics port in its log")
        port = int(re.search(r"127\.0\.0\.1:(\d+)/metrics", follower.log.read_text())[1])

        async def metric_shows_one() -> bool:
            return (await scrape(port)).get("opsmantik_audit_unaccounted_events") == 1.0

        await wait_for(metric_shows_one, 20, 0.2, "opsmantik_audit_unaccounted_events 1")
        values = await scrape(port)
        p = lost["kafka_partition"]
        assert values[f'opsmantik_audit_audited_offset{{partition="{p}"}}'] > lost["kafka_offset"]
        assert values["opsmantik_audit_breach_dead_letters"] == 0.0
    finally:
        assert follower.stop() == 0, follower.tail()


async def test_a_dead_letter_of_a_gateway_accepted_event_is_a_breach(
    pipeline: Pipeline, settings: Settings, pool: asyncpg.Pool
) -> None:
    site = await new_site_id(pool)
    produce(settings, [(str(site).encode(), message(site, "c-1"))])
    await wait_for(ledgered(pool, site, 1), what="c-1 ledgered")
    # Plant what a worker bug would do (issue 9, reproduction 1): the valid event dead-lettered.
    row = await pool.fetchrow(
        "DELETE FROM ingest_idempotency WHERE site_id = $1 RETURNING kafka_partition, kafka_offset", site
    )
    await pool.execute(
        "INSERT INTO ingest_dead_letter (topic, kafka_partition, kafka_offset, site_id, "
        "event_id, reason, payload) VALUES ($1, $2, $3, $4, 'c-1', 'planted', '')",
        settings.topic,
        row["kafka_partition"],
        row["kafka_offset"],
        str(site),
    )
    code, report, out = audit(settings, "--month", MONTH, "--json")
    assert code == 1, out
    assert site_row(report, site)["breaches"] == 1 and site_row(report, site)["unaccounted"] == 0
    assert [f["event_id"] for f in report["findings"] if f["kind"] == "breach"] == ["c-1"]


async def test_a_message_the_worker_group_committed_past_unledgered_is_unaccounted(
    pipeline: Pipeline, settings: Settings, pool: asyncpg.Pool
) -> None:
    # No worker: the message below is never ledgered; no relay: the later tests' outbox row stays.
    assert pipeline.stop() == {"worker": 0, "relay": 0}, pipeline.worker.tail()
    site = await new_site_id(pool)
    produce(settings, [(str(site).encode(), message(site, "d-1"))])

    def commit_worker_group_to_end() -> None:
        c = Consumer(
            {
                "bootstrap.servers": settings.kafka_bootstrap,
                "group.id": settings.worker_group,
                "enable.auto.commit": False,
            }
        )
        try:
            ends = [
                TopicPartition(
                    settings.topic, p, c.get_watermark_offsets(TopicPartition(settings.topic, p), 10)[1]
                )
                for p in range(settings.topic_partitions)
            ]
            c.commit(offsets=[tp for tp in ends if tp.offset > 0], asynchronous=False)
        finally:
            c.close()

    await asyncio.to_thread(commit_worker_group_to_end)
    code, report, out = audit(settings, "--month", MONTH, "--json", "--wait", "0")
    assert code == 1, out
    assert site_row(report, site)["unaccounted"] == 1
    assert ("unaccounted", "d-1") in {(f["kind"], f["event_id"]) for f in report["findings"]}


def test_usage_errors_and_unreachable_engines(settings: Settings) -> None:
    assert audit(settings, "--month", "2026-13")[0] == 2
    assert audit(settings, "--wait", "-1")[0] == 2
    assert audit(settings, "--month", MONTH, "--follow")[0] == 2
    assert audit(settings, "--follow", "--json")[0] == 2
    code, _, out = audit(settings, "--month", MONTH, database_url="postgresql://x@127.0.0.1:1/none")
    assert code == 3 and "opsmantik stack up" in out, out
    code, _, out = audit(settings, "--month", MONTH, kafka_bootstrap="127.0.0.1:1")
    assert code == 3 and "cannot read the topic" in out and "opsmantik stack up" in out, out


async def test_slo_report_and_reconcile_show_the_losses_dead_letters_and_an_overdue_outbox_row(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    # After the tests above: one deleted ledger row and one skipped message (unaccounted), one breach.
    snap = slo_report(settings)
    integrity = snap["objectives"]["integrity"]
    assert not integrity["met"]
    assert (integrity["unaccounted"], integrity["breach_dead_letters"]) == (2, 1), integrity
    assert snap["backlog"]["dead_letters_month"] == 8  # 7 of the clean run + the planted one
    site = await new_site_id(pool)
    await pool.execute(
        "INSERT INTO ingest_fallback_buffer (site_id, event_id, payload, received_at) "
        "VALUES ($1, 'late', $2, now() - interval '25 hours')",
        site,
        message(site, "late"),
    )
    snap = slo_report(settings)
    assert snap["backlog"]["outbox_older_than_24h"] == 1
    assert not snap["objectives"]["fallback_within_24h"]["met"]
    done = subprocess.run(
        [OPSMANTIK, "reconcile", "--month", MONTH, "--json"],
        env=env_for(settings),
        capture_output=True,
        timeout=60,
    )
    report = orjson.loads(done.stdout)
    assert done.returncode == 1 and not report["backlog_ok"]
    assert report["backlog"]["outbox_older_than_24h"] == 1 and report["backlog"]["dead_letters_month"] == 8
    await pool.execute("DELETE FROM ingest_fallback_buffer WHERE site_id = $1", site)


async def test_a_ledger_row_deleted_after_the_audit_confirmed_it_is_counted_as_vanished(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    site = await pool.fetchval("SELECT site_id FROM ingest_idempotency WHERE event_id = 'a-7'")
    code, report, out = audit(settings, "--month", MONTH, "--json", "--wait", "0")
    assert site_row(report, site)["vanished"] == 0, out
    await pool.execute("DELETE FROM ingest_idempotency WHERE site_id = $1 AND event_id = 'a-7'", site)
    code, report, out = audit(settings, "--month", MONTH, "--json", "--wait", "0")
    assert code == 1 and site_row(report, site)["vanished"] == 1 and report["vanished"] == 1, out
    assert site_row(report, site)["unaccounted"] == 0  # audited once, when it was there
