"""The worker is total: thousands of hostile messages produced straight to the ingest topic
(random bytes, wrong types, huge values, tombstones, deep nesting, unknown sites), interleaved
with valid ones. Every valid one is ledgered exactly once, every hostile one dead-lettered
exactly once at its own offset, and the worker never restarts. Each hostile message is invalid
by construction, so the test does not ask the code under test what is valid."""

from __future__ import annotations

import dataclasses
import hashlib
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

    ours = [(part, off) for part, off, _ok, _i in delivered]  # the topic's other tests' are not ours

    async def settled() -> bool:
        ledger = await pool.fetchval(
            "SELECT count(*) FROM ingest_idempotency WHERE site_id = ANY($1)", site_ids
        )
        return ledger == len(valid) and len(await dead_letters_at(pool, s.topic, ours)) == len(hostile)

    await wait_for(settled, 90, 0.2, f"{len(valid)} ledger rows and {len(hostile)} dead letters")

    ledger = {
        (r[0], r[1])
        for r in await pool.fetch(
            "SELECT site_id, event_id FROM ingest_idempotency WHERE site_id = ANY($1)", site_ids
        )
    }
    assert ledger == valid
    dead = [(r["kafka_partition"], r["kafka_offset"]) for r in await dead_letters_at(pool, s.topic, ours)]
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


async def dead_letters_at(
    pool: asyncpg.Pool, topic: str, offsets: list[tuple[int, int]]
) -> list[asyncpg.Record]:
    """The dead letters at these (partition, offset)s of the topic (a test's own messages)."""
    return await pool.fetch(
        "SELECT d.kafka_partition, d.kafka_offset, d.reason FROM ingest_dead_letter d "
        "JOIN unnest($2::int[], $3::bigint[]) AS o(p, f) ON d.kafka_partition = o.p AND d.kafka_offset = o.f "
        "WHERE d.topic = $1",
        topic,
        [p for p, _ in offsets],
        [f for _, f in offsets],
    )


ABSENT = object()
# The topic's subject rule (docs/design.md, schemas/event.v1.json): absent or null is none; else a
# string of 1-256 characters (code points) without NUL. (label, subject, stored subject or REFUSED)
REFUSED = object()
SUBJECTS: list[tuple[str, object, object]] = [
    ("missing", ABSENT, None),
    ("null", None, None),
    ("empty", "", REFUSED),
    ("one", "c", "c"),
    ("256", "s" * 256, "s" * 256),
    ("257", "s" * 257, REFUSED),
    ("256-astral", "\U0001f600" * 256, "\U0001f600" * 256),  # 512 UTF-16 units, 1,024 UTF-8 bytes
    ("257-astral", "\U0001f600" * 257, REFUSED),
    ("256-combining", "e\u0301" * 128, "e\u0301" * 128),  # 128 glyphs, 256 code points
    ("257-combining", "e\u0301" * 128 + "x", REFUSED),
    (
        "unicode",
        "cust-\u30af\u00e9\u2028\u202e\U0001f469\u200d\U0001f467",
        "cust-\u30af\u00e9\u2028\u202e\U0001f469\u200d\U0001f467",
    ),
    ("controls", "\x01\t\x1f\x7f", "\x01\t\x1f\x7f"),  # only NUL is refused
    ("space", " ", " "),
    ("int", 7, REFUSED),
    ("float", 1.5, REFUSED),
    ("bool", True, REFUSED),
    ("list", ["cust"], REFUSED),
    ("object", {"id": "cust"}, REFUSED),
    ("nul", "a\x00b", REFUSED),
    ("nul-only", "\x00", REFUSED),
    ("huge", "h" * 200_000, REFUSED),
    ("lone-surrogate", "\ud800", REFUSED),  # not JSON text orjson accepts, not storable
]


def with_subject(doc: dict[str, object], subject: object, ascii_only: bool) -> bytes:
    """The message with `subject` set (or absent); escaped ASCII or raw UTF-8 (a lone surrogate
    written as the bytes it would be, as a broken producer would)."""
    if subject is ABSENT:
        doc.pop("subject", None)
    else:
        doc["subject"] = subject
    return json.dumps(doc, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


def cloudevent_message(site: uuid.UUID, source: str, ce_id: str, subject: object) -> dict[str, object]:
    """What POST /api/v1/events produces (docs/cloudevents.md "Mapping to the ledger"), built
    here: event_id ce~ + SHA-256 of [source, id], properties {ce, data}, the subject in both."""
    event_id = "ce~" + hashlib.sha256(json.dumps([source, ce_id], separators=(",", ":")).encode()).hexdigest()
    doc = orjson.loads(message(site, event_id))
    ce: dict[str, object] = {"source": source, "id": ce_id}
    if subject is not ABSENT and not (isinstance(subject, str) and len(subject) > 1000):
        ce["subject"] = subject  # (a huge one only at the top: properties have their own limit)
    doc["type"] = "prompt"
    doc["properties"] = {
        "ce": ce if subject is not ABSENT else {**ce, "subject": "in-properties-only"},
        "data": {"tokens": 3},
    }
    return doc


async def test_subject_boundaries_are_ledgered_or_dead_lettered_and_neighbours_go_on(
    fuzz_settings: Settings, pipeline: Pipeline, pool: asyncpg.Pool
) -> None:
    """Each subject case in an /api/sync-shaped and a CloudEvent-shaped message, each between two
    valid neighbours on its partition, all in one burst (so in shared batches): the valid ones
    are ledgered with their exact subject (absent and null: none; a CloudEvent's is the message's
    own `subject`, not properties.ce's), the others dead-lettered once with a reason naming
    `subject` (a lone surrogate: not JSON at all), every neighbour ledgered, the worker alive.
    Planted, each fails: 257 characters or a non-string let through (the batch then fails on
    Postgres and the worker stalls: every message is never accounted for), UTF-8 bytes counted
    for characters (the 256 emoji refused), null refused."""
    s = fuzz_settings
    async with pool.acquire() as conn:
        site = (await sites.create_site(conn, "fz-subject")).site_id
    plan: list[tuple[bytes, bytes, str, object, str]] = []  # key, value, event_id, stored, label
    for label, subject, stored in SUBJECTS:
        sync_id = f"sub-{label}"
        ce = cloudevent_message(site, "https://fuzz.example/src", label, subject)
        for shape, event_id, doc, ascii_only in (
            ("sync", sync_id, orjson.loads(message(site, sync_id)), True),
            ("ce", str(ce["event_id"]), ce, False),
        ):
            key = f"{site}/{shape}-{label}".encode()  # one partition for the case and its neighbours
            before, after = f"nb-{shape}-{label}-a", f"nb-{shape}-{label}-b"
            plan.append((key, message(site, before), before, None, "neighbour"))
            plan.append((key, with_subject(doc, subject, ascii_only), event_id, stored, label))
            plan.append((key, message(site, after), after, None, "neighbour"))

    delivered: list[tuple[int, int, str, object, str]] = []
    errors: list[object] = []
    p = Producer(producer_config(s))
    for key, value, event_id, stored, label in plan:

        def report(
            err: object, msg: object, case: tuple[str, object, str] = (event_id, stored, label)
        ) -> None:
            if err:
                errors.append(err)
            else:
                delivered.append((msg.partition(), msg.offset(), *case))  # type: ignore[attr-defined]

        p.produce(s.topic, value, key, on_delivery=report)
        p.poll(0)
    assert p.flush(60) == 0 and not errors, errors
    assert len(delivered) == len(plan)
    offsets = [(part, off) for part, off, *_ in delivered]
    valid = {e: stored for _p, _o, e, stored, _l in delivered if stored is not REFUSED}
    hostile = {(part, off): label for part, off, _e, stored, label in delivered if stored is REFUSED}

    async def settled() -> bool:  # every message accounted for (which way: asserted below)
        n = await pool.fetchval("SELECT count(*) FROM ingest_idempotency WHERE site_id = $1", site)
        return n + len(await dead_letters_at(pool, s.topic, offsets)) >= len(plan)

    await wait_for(settled, 60, 0.2, f"{len(plan)} subject cases and neighbours ledgered or dead-lettered")
    rows = await pool.fetch("SELECT event_id, subject FROM ingest_idempotency WHERE site_id = $1", site)
    assert {r["event_id"]: r["subject"] for r in rows} == valid
    dead = {
        (r["kafka_partition"], r["kafka_offset"]): r["reason"]
        for r in await dead_letters_at(pool, s.topic, offsets)
    }
    assert dead.keys() == hostile.keys()
    for at, reason in dead.items():  # a reason naming the field (a lone surrogate: not JSON at all)
        assert ("not JSON" if hostile[at] == "lone-surrogate" else "subject:") in reason, (
            hostile[at],
            reason,
        )
    worker = pipeline.worker
    assert worker.alive(), worker.tail()
    log = worker.log.read_text(errors="replace")
    for sign in ("crashed", "WATCHDOG", "giving up", "decoder error"):
        assert sign not in log, worker.tail(60)
