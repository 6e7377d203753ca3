"""The worker is total: thousands of hostile messages produced straight to the ingest topic
(random bytes, wrong types, huge values, tombstones, deep nesting, unknown sites), interleaved
with valid ones. Every valid one is ledgered exactly once, every hostile one dead-lettered
exactly once at its own offset, and the worker never restarts. Each hostile message is invalid
by construction, so the test does not ask the code under test what is valid."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import uuid
from collections.abc import Callable

import asyncpg
import orjson
import pytest
from confluent_kafka import Producer
from opsmantik import sites
from opsmantik.config import Settings
from opsmantik.kafka.settings import producer_config
from opsmantik.kafka.topics import ensure_topics

from tests.support.pipeline import Pipeline, message, pipeline_fixture, wait_for

pytestmark = pytest.mark.integration
VALID, HOSTILE = 1500, 1500
SEED = int(os.environ.get("OPSMANTIK_FUZZ_SEED", random.randrange(2**32)))


@pytest.fixture(scope="module")
def fuzz_settings(settings: Settings) -> Settings:
    s = dataclasses.replace(
        settings, topic=f"{settings.topic}.fuzz", worker_group=f"{settings.worker_group}-fuzz"
    )
    ensure_topics(s)
    return s


pipeline = pipeline_fixture(
    "worker", "relay", "audit", settings="fuzz_settings"
)  # messages go straight to the topic


def junk(rng: random.Random) -> object:
    """A JSON value of any type, sometimes huge or deep."""
    return rng.choice(
        [
            None,
            True,
            False,
            0,
            -1,
            1.5,
            10**30,
            -(10**30),
            1e308,
            "",
            "x" * rng.randint(1, 300),
            "\u0000",
            "\ud7ff\u2028",
            [],
            [1, [2, [3]]],
            {},
            {"a": {"b": None}},
            "2026-13-45T99:99:99Z",
        ]
    )


def deep(n: int) -> str:
    return "[" * n + "]" * n


def mutations(site: uuid.UUID) -> list[Callable[[random.Random, dict[str, object]], bytes | None]]:
    fields = [
        "v",
        "site_id",
        "event_id",
        "type",
        "occurred_at",
        "usage_month",
        "quantity",
        "received_at",
        "path",
        "gateway_status",
    ]
    bad_values: dict[str, list[object]] = {
        "v": [2, 0, "1", True, None, 1.5, [1]],
        "site_id": ["nope", 7, None, [str(site)], str(uuid.uuid4())],  # the last: an unknown site
        "event_id": ["", "a b", "x" * 129, 5, None, ["e"], "é", "e\u0000"],
        "type": ["", "t" * 65, 3, None, {"t": 1}, "a\u0000b"],
        "occurred_at": [
            "yesterday",
            5,
            None,
            "0001-01-01T00:00:00+01:00",
            "2026-11-27T10:00:00",
            "9999-12-31T23:59:59-01:00",
        ],
        "usage_month": ["2020-01-01", "2026-13-01", 202611, None, "x"],
        "quantity": [0, -1, 10**12 + 1, 10**30, 1.0, "5", True, None, [1]],
        "received_at": ["now", None, 3, "2026-02-30T00:00:00Z"],
        "path": ["smtp", ["kafka"], None, 1, {"p": "kafka"}],
        "gateway_status": ["ok", None, ["accepted"], 7],
    }

    def wrong(rng: random.Random, doc: dict[str, object]) -> bytes:
        name = rng.choice(fields)
        doc[name] = rng.choice(bad_values[name])
        return _dumps(doc)

    def missing(rng: random.Random, doc: dict[str, object]) -> bytes:
        del doc[rng.choice(fields)]
        return _dumps(doc)

    def unknown(rng: random.Random, doc: dict[str, object]) -> bytes:
        doc[rng.choice(["extra", "Event_ID", "evil\u0000name", "\ud7ff", "v2"])] = junk(rng)
        return _dumps(doc)

    def bad_props(rng: random.Random, doc: dict[str, object]) -> bytes:
        doc["properties"] = rng.choice(
            [[1], "text", 5, True, {"a": "\u0000"}, {"\u0000": 1}, {"big": "x" * (16 * 1024)}]
        )
        return _dumps(doc)

    def raw(rng: random.Random, _doc: dict[str, object]) -> bytes | None:
        return rng.choice(
            [
                None,
                b"",
                rng.randbytes(rng.randint(1, 200)),
                b"\xff\xfe{}",
                b"{",
                b'{"v": 1',
                deep(rng.randint(1100, 3000)).encode(),
                b"[" + b"1," * 1000 + b"1]",
                b"null",
                b"17",
                b'"a string"',
                b'[{"v": 1}]',
                b"\x00" * 8,
                b'{"v":1,"event_id":"\xed\xa0\x80"}',
                b"{" + b'"a":{' * 600 + b"}" * 601,
            ]
        )

    return [wrong, wrong, wrong, missing, unknown, bad_props, raw]


def _dumps(doc: dict[str, object]) -> bytes:
    return json.dumps(doc).encode()  # the stdlib writes what orjson refuses (huge ints, surrogates)


async def test_hostile_messages_are_dead_lettered_and_valid_ones_ledgered(
    fuzz_settings: Settings, pipeline: Pipeline, pool: asyncpg.Pool
) -> None:
    s = fuzz_settings
    rng = random.Random(SEED)
    print(f"\ntopic fuzz seed {SEED} (OPSMANTIK_FUZZ_SEED={SEED} reruns it)")
    async with pool.acquire() as conn:
        site_ids = [(await sites.create_site(conn, f"fz-{i}")).site_id for i in range(4)]
    muts = {site: mutations(site) for site in site_ids}
    plan: list[tuple[bytes | None, bytes | None, bool, tuple[uuid.UUID, str] | None]] = []
    for i in range(VALID + HOSTILE):
        site = rng.choice(site_ids)
        key = rng.choice([str(site).encode(), str(site).encode(), None, rng.randbytes(4)])
        event_id = f"fz-{i}"
        if i % 2 == 0:
            value = message(site, event_id, quantity=rng.randint(1, 10**12))
            plan.append((key, value, True, (site, event_id)))
        else:
            doc = orjson.loads(message(site, event_id))
            plan.append((key, rng.choice(muts[site])(rng, doc), False, None))

    delivered: list[tuple[int, int, bool, tuple[uuid.UUID, str] | None]] = []
    errors: list[object] = []
    p = Producer(producer_config(s))
    for key, value, ok, ident in plan:

        def report(err: object, msg: object, ok: bool = ok, ident: object = ident) -> None:
            if err:
                errors.append(err)
            else:
                delivered.append((msg.partition(), msg.offset(), ok, ident))  # type: ignore[attr-defined]

        p.produce(s.topic, value, key, on_delivery=report)
        p.poll(0)
    assert p.flush(60) == 0 and not errors, errors
    assert len(delivered) == len(plan)
    valid = {ident for _p, _o, ok, ident in delivered if ok}
    hostile = {(part, off) for part, off, ok, _i in delivered if not ok}

    async def settled() -> bool:
        ledger = await pool.fetchval(
            "SELECT count(*) FROM ingest_idempotency WHERE site_id = ANY($1)", site_ids
        )
        dead = await pool.fetchval("SELECT count(*) FROM ingest_dead_letter WHERE topic = $1", s.topic)
        return ledger == len(valid) and dead == len(hostile)

    await wait_for(settled, 90, 0.2, f"{len(valid)} ledger rows and {len(hostile)} dead letters")

    ledger = {
        (r[0], r[1])
        for r in await pool.fetch(
            "SELECT site_id, event_id FROM ingest_idempotency WHERE site_id = ANY($1)", site_ids
        )
    }
    assert ledger == valid
    dead = [
        (r[0], r[1])
        for r in await pool.fetch(
            "SELECT kafka_partition, kafka_offset FROM ingest_dead_letter WHERE topic = $1", s.topic
        )
    ]
    assert sorted(dead) == sorted(hostile)  # each hostile message once, no valid one among them
    worker = pipeline.worker
    assert worker.alive(), worker.tail()
    log = worker.log.read_text(errors="replace")
    for sign in ("crashed", "WATCHDOG", "giving up", "decoder error"):
        assert sign not in log, worker.tail(60)
    print(
        f"topic fuzz: {len(valid)} valid ledgered once, {len(hostile)} hostile dead-lettered once, "
        "0 worker restarts"
    )
