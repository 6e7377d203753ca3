"""POST /api/v1/events with the official `cloudevents` SDK as the client and OpenMeter's published
request examples (openmeter_examples.yaml), through the real gateway, Kafka, worker and ledger."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import openmeter
import orjson
import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer
from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.bindings.http import to_binary, to_structured
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from confluent_kafka import Consumer, TopicPartition
from opsmantik.config import Settings
from opsmantik.gateway.app import create_app
from opsmantik.gateway.cloudevents import ledger_event_id
from opsmantik.gateway.publisher import OutboxPublisher
from opsmantik.gateway.sla_rollup import FIELDS, SLA
from opsmantik.schema_files import json_schema

from tests.support.gateway import new_site
from tests.support.pipeline import Pipeline, pipeline_fixture, wait_for

pytestmark = pytest.mark.integration
EXAMPLES = yaml.safe_load((Path(__file__).parent / "openmeter_examples.yaml").read_text())["examples"]
BATCH = "application/cloudevents-batch+json"
MAX_EVENTS = 6
MAX_BODY = 4096


@pytest.fixture(scope="module")
def ce_settings(settings: Settings) -> Settings:
    return dataclasses.replace(
        settings,
        cloudevents_quantity='{"api-calls": "/duration"}',  # OpenMeter's meter: SUM($.duration)
        max_batch_events=MAX_EVENTS,
        max_body_bytes=MAX_BODY,
    )


@pytest.fixture(scope="module")
async def client(ce_settings: Settings) -> AsyncIterator[TestClient]:
    c = TestClient(TestServer(create_app(ce_settings)))
    await c.start_server()
    yield c
    await c.close()


# The pipeline but its gateway (the in-process `client` above, with the CloudEvents settings): an
# event answered from the outbox (`fallback`, e.g. the broker slower than the 250 ms deadline on a
# busy machine) reaches the ledger through the relay.
pipeline = pipeline_fixture("worker", "relay", "audit")


def retimed(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = copy.deepcopy(events)
    for e in out:
        if "time" in e:
            e["time"] = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    return out


def sdk_event(**attributes: Any) -> CloudEvent:
    data = attributes.pop("data", None)
    return CloudEvent({"source": "sdk-test", "type": "request", "subject": "customer-9", **attributes}, data)


def sdk_batch(events: list[CloudEvent]) -> bytes:
    """The JSON batch format: an array of the SDK's own JSON serialisation of each event."""
    fmt = JSONFormat()
    return b"[" + b",".join(fmt.write(e) for e in events) + b"]"


def as_sdk(doc: dict[str, Any]) -> CloudEvent:
    attrs = {k: v for k, v in doc.items() if k != "data"}
    if "time" in attrs:
        attrs["time"] = datetime.fromisoformat(attrs["time"])
    return CloudEvent(attrs, doc.get("data"))


async def post(client: TestClient, key: str, body: bytes, content_type: str = BATCH, **headers: str) -> Any:
    return await client.post(
        "/api/v1/events",
        data=body,
        headers={"Authorization": f"Bearer {key}", "Content-Type": content_type, **headers},
    )


def worker_caught_up(settings: Settings) -> bool:
    """The worker's group committed up to the end of every partition of this session's topic."""
    c = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": settings.worker_group})
    try:
        parts = [TopicPartition(settings.topic, p) for p in range(settings.topic_partitions)]
        ends = {tp.partition: c.get_watermark_offsets(tp, timeout=10)[1] for tp in parts}
        done = {tp.partition: tp.offset for tp in c.committed(parts, timeout=10)}
    finally:
        c.close()
    return all(end == 0 or done[p] >= end for p, end in ends.items())


async def quiesced(settings: Settings, pool: asyncpg.Pool, site: uuid.UUID) -> bool:
    """Nothing of the site left in the outbox, then nothing left on the topic for the worker."""
    pending = await pool.fetchval("SELECT count(*) FROM ingest_fallback_buffer WHERE site_id = $1", site)
    return pending == 0 and await asyncio.to_thread(worker_caught_up, settings)


async def ledger(pool: asyncpg.Pool, site: uuid.UUID) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT event_id, event_type, quantity, properties FROM ingest_idempotency WHERE site_id = $1 "
        "ORDER BY event_id",
        site,
    )


async def test_openmeter_batch_by_the_sdk_is_ledgered_once_and_once_again(
    client: TestClient, pipeline: Pipeline, pool: asyncpg.Pool, settings: Settings
) -> None:
    site, key = await new_site(pool)
    events = [as_sdk(doc) for doc in retimed(EXAMPLES)]
    body = sdk_batch(events)
    r = await post(client, key, body)
    assert r.status == 204, await r.text()
    outcomes = dict(kv.split("=") for kv in r.headers["X-Event-Outcomes"].split(", "))
    assert sum(map(int, outcomes.values())) == len(EXAMPLES) and outcomes.keys() <= {"accepted", "fallback"}
    await wait_for(lambda: _count(pool, site, len(EXAMPLES)), what="the examples in the ledger")

    # Sent again (a client retry): 2xx, and after the worker processed it, still once each.
    r = await post(client, key, body, Prefer="return=representation")
    assert r.status == 200 and r.headers["Preference-Applied"] == "return=representation"
    results = (await r.json())["results"]
    assert [(x["source"], x["id"]) for x in results] == [(d["source"], d["id"]) for d in EXAMPLES]
    assert all(x["event_id"] == ledger_event_id(x["source"], x["id"]) for x in results)
    await wait_for(lambda: quiesced(settings, pool, site), what="the resend through the pipeline")
    rows = await ledger(pool, site)
    assert len(rows) == len(EXAMPLES)
    by_id = {orjson.loads(r["properties"])["ce"]["id"]: r for r in rows}
    # OpenMeter's meter on these: SUM(data.duration) = "10" + "20" = 30; other types count 1.
    assert sum(r["quantity"] for r in rows if r["event_type"] == "api-calls") == 30
    assert by_id["readme-curl-1"]["quantity"] == 1
    props = orjson.loads(by_id["00002"]["properties"])
    assert props == {
        "ce": {"source": "service-0", "id": "00002", "subject": "customer-1"},
        "data": {"duration": "20", "path": "/hello"},
    }


async def _count(pool: asyncpg.Pool, site: uuid.UUID, n: int) -> bool:
    return len(await ledger(pool, site)) >= n


async def test_each_media_type_and_the_sdks_structured_mode(client: TestClient, pool: asyncpg.Pool) -> None:
    _, key = await new_site(pool)
    message = to_structured(sdk_event(data={"n": 1}), JSONFormat())
    assert message.headers["content-type"] == "application/cloudevents+json"
    assert (await post(client, key, message.body, message.headers["content-type"])).status == 204
    one = orjson.dumps(retimed(EXAMPLES)[3])
    for body, ctype in [
        (one, "application/cloudevents+json; charset=utf-8"),
        (one, "application/json"),
        (b"[" + one + b"]", "application/json;charset=UTF-8"),
        (b"[" + one + b"]", "Application/CloudEvents-Batch+JSON"),
    ]:
        r = await post(client, key, body, ctype)
        assert r.status == 204, (ctype, await r.text())
    for body, ctype in [(b"[" + one + b"]", "application/cloudevents+json"), (one, BATCH)]:
        r = await post(client, key, body, ctype)
        assert r.status == 400, ctype
    r = await post(client, key, one, "text/plain")
    assert r.status == 415 and "application/cloudevents+json" in (await r.json())["message"]


async def test_verbatim_examples_are_400_naming_time(client: TestClient, pool: asyncpg.Pool) -> None:
    """OpenMeter's examples carry a 2023 time: older than 35 days, never billed here."""
    site, key = await new_site(pool)
    r = await post(client, key, orjson.dumps(EXAMPLES))
    assert r.status == 400
    details = (await r.json())["details"]
    assert [(d["index"], d["field"]) for d in details] == [(0, "time"), (1, "time"), (2, "time")]


async def test_a_bad_event_is_400_naming_it_and_nothing_is_stored(
    client: TestClient, pool: asyncpg.Pool, settings: Settings
) -> None:
    site, key = await new_site(pool)
    good = retimed(EXAMPLES)[0]
    for bad, field in [
        ({**good, "subject": None}, "subject"),
        ({k: v for k, v in good.items() if k != "id"}, "id"),
        ({**good, "specversion": "0.3"}, "specversion"),
        ({**good, "data": {"duration": "ten"}}, "data"),  # the type's quantity pointer
        ({**good, "data": [1]}, "data"),
        ({**good, "time": "01/01/2026"}, "time"),
        ({**good, "source": "has space"}, "source"),
        ({**good, "data_base64": "AA=="}, "data_base64"),
    ]:
        r = await post(client, key, orjson.dumps([good, bad]))
        assert r.status == 400, field
        details = (await r.json())["details"]
        assert [(d["index"], d["field"]) for d in details] == [(1, field)], details
    assert await ledger(pool, site) == []


async def test_limits_at_their_edges(client: TestClient, pool: asyncpg.Pool) -> None:
    _, key = await new_site(pool)
    base = retimed(EXAMPLES)[3]
    batch = [{**base, "id": f"e{i}"} for i in range(MAX_EVENTS)]
    assert (await post(client, key, orjson.dumps(batch))).status == 204
    r = await post(client, key, orjson.dumps([*batch, {**base, "id": "one-more"}]))
    assert r.status == 413 and (await r.json())["error"] == "payload_too_large"
    # The body limit: exactly MAX_BODY bytes is taken, one more is 413.
    shell = orjson.dumps({**base, "id": "big", "data": {"pad": ""}})
    pad = "x" * (MAX_BODY - len(shell))
    exact = orjson.dumps({**base, "id": "big", "data": {"pad": pad}})
    assert len(exact) == MAX_BODY
    assert (await post(client, key, exact, "application/cloudevents+json")).status == 204
    over = orjson.dumps({**base, "id": "big", "data": {"pad": pad + "x"}})
    assert (await post(client, key, over, "application/cloudevents+json")).status == 413


async def test_auth_is_the_same_as_sync(client: TestClient) -> None:
    body = orjson.dumps(retimed(EXAMPLES)[3])
    r = await client.post("/api/v1/events", data=body, headers={"Content-Type": BATCH})
    assert r.status == 401 and r.headers["WWW-Authenticate"] == "Bearer"
    r = await post(client, "omk_" + "x" * 43, body)
    assert r.status == 401


async def test_duplicates_within_a_batch_and_across_sources(client: TestClient, pool: asyncpg.Pool) -> None:
    _, key = await new_site(pool)
    e = retimed(EXAMPLES)[3]
    same, other = {**e}, {**e, "source": "another-source"}
    r = await post(client, key, orjson.dumps([e, same, other]), Prefer="return=representation")
    assert r.status == 200
    results = (await r.json())["results"]
    assert results[0]["receipt"] == results[1]["receipt"] != results[2]["receipt"]
    assert results[0]["event_id"] != results[2]["event_id"]  # same id, other source: another event


async def test_sync_cannot_write_a_cloudevent_id(client: TestClient, pool: asyncpg.Pool) -> None:
    _, key = await new_site(pool)
    sync_event = {
        "event_id": ledger_event_id("readme", "readme-curl-1"),
        "type": "request",
        "occurred_at": datetime.now(UTC).isoformat(),
    }
    r = await client.post(
        "/api/sync",
        data=orjson.dumps(sync_event),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    assert r.status == 400 and (await r.json())["details"][0]["field"] == "event_id"


def read_billable(settings: Settings, site: uuid.UUID, n: int, timeout_s: float = 30.0) -> list[Any]:
    """The site's first n messages on the billable topic, as the SDK's Kafka binding reads them."""
    c = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"t-{uuid.uuid4()}",
            "enable.auto.commit": False,
        }
    )
    key = str(site).encode()
    out: list[Any] = []
    try:
        c.assign([TopicPartition(settings.billable_topic, p, 0) for p in range(settings.topic_partitions)])
        deadline = time.monotonic() + timeout_s
        while len(out) < n and time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is None or msg.error() or msg.key() != key:
                continue
            headers = {k: v for k, v in msg.headers() or []}
            out.append(
                ce_kafka.from_binary(ce_kafka.KafkaMessage(headers, msg.key(), msg.value()), JSONFormat())
            )
    finally:
        c.close()
    return out


async def test_the_billable_topic_speaks_cloudevents(
    client: TestClient, pipeline: Pipeline, pool: asyncpg.Pool, settings: Settings
) -> None:
    site, key = await new_site(pool)
    r = await post(client, key, orjson.dumps(retimed(EXAMPLES)[:1]))
    assert r.status == 204
    sync_event = {"event_id": "sync-1", "type": "api_call", "occurred_at": datetime.now(UTC).isoformat()}
    r = await client.post(
        "/api/sync",
        data=orjson.dumps(sync_event),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    assert r.status == 200
    events = {e.get_data()["event_id"]: e for e in await asyncio.to_thread(read_billable, settings, site, 2)}
    ce_id = ledger_event_id("service-0", "00001")
    assert sorted(events) == sorted([ce_id, "sync-1"])
    for event_id, e in events.items():
        assert e.get_id() == event_id and e.get_specversion() == "1.0"
        assert e.get_source() == f"urn:opsmantik:site:{site}"
        assert e.get_type() == "dev.opsmantik.billable.v1"
        assert e.get_dataschema() == json_schema("billable.v1.json")["$id"]
        assert e.get_datacontenttype() == "application/json"
        assert e.get_extension("partitionkey") == str(site)
        assert e.get_time() == datetime.fromisoformat(e.get_data()["occurred_at"])
    assert events[ce_id].get_subject() == "customer-1" and events["sync-1"].get_subject() is None
    assert events[ce_id].get_data()["quantity"] == 10  # data.duration "10"


async def test_the_outbox_path_ledgers_a_cloudevent_once(
    ce_settings: Settings, pipeline: Pipeline, pool: asyncpg.Pool, settings: Settings
) -> None:
    """Kafka away (the publisher is the outbox alone): 204 `fallback`, and the relay and the
    worker ledger the events once, sent twice."""
    c = TestClient(TestServer(create_app(ce_settings, publisher=OutboxPublisher(pool))))
    await c.start_server()
    try:
        site, key = await new_site(pool)
        body = orjson.dumps(retimed(EXAMPLES)[:2])
        for _ in range(2):
            r = await post(c, key, body)
            assert r.status == 204 and r.headers["X-Event-Outcomes"] == "fallback=2"
        await wait_for(lambda: _count(pool, site, 2), what="the outbox's events in the ledger")
        await wait_for(lambda: quiesced(settings, pool, site), what="the second copy through the pipeline")
        rows = await ledger(pool, site)
        assert sorted(r["quantity"] for r in rows) == [10, 20]
    finally:
        await c.close()


async def test_answers_count_in_the_sla_and_slo_rollups(client: TestClient, pool: asyncpg.Pool) -> None:
    """A 204 is a persisted request for the per-site SLA (sla_requests), like /api/sync's 200;
    a 400 is `invalid`; the route is labelled in /metrics."""
    site, key = await new_site(pool)
    sla = client.server.app[SLA]
    assert (await post(client, key, orjson.dumps(retimed(EXAMPLES)[3:]))).status == 204
    assert (await post(client, key, b"[]")).status == 400

    async def counted() -> bool:  # in memory, or already flushed (every 5 s) to sla_requests
        rows = [v for k, v in sla.buckets.rows.items() if k[0] == site]
        counts = {f: sum(v[i] for v in rows) for i, f in enumerate(FIELDS)}
        flushed = await pool.fetchrow(
            "SELECT coalesce(sum(received), 0) AS received, coalesce(sum(persisted), 0) AS persisted, "
            "coalesce(sum(invalid), 0) AS invalid FROM sla_requests WHERE site_id = $1",
            site,
        )
        return [counts[f] + flushed[f] for f in ("received", "persisted", "invalid")] == [2, 1, 1]

    await wait_for(counted, what="received 2, persisted 1, invalid 1 in the SLA rollup")
    metrics = await (await client.get("/metrics")).text()
    assert 'route="/api/v1/events"' in metrics


async def test_the_sdks_subject_reaches_the_ledger_and_the_meters_grouped_by_subject(
    client: TestClient, pipeline: Pipeline, pool: asyncpg.Pool
) -> None:
    """A subject set with the `cloudevents` SDK, sent in structured mode (one event,
    application/cloudevents+json) and in the SDK's JSON batch, is the ledger row's `subject`, and
    the `events` meter read with the `openmeter` SDK grouped by subject (the reserved group-by
    key) and filtered by it counts each subject's events. HTTP binary mode (`ce-*` headers, the
    body the data) is not accepted (docs/cloudevents.md): 400, nothing of it stored."""
    site, key = await new_site(pool)
    at = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=1)
    subjects = ["customer-\u00e9-1", "cust/2 with space", "s" * 256, "\u5ba2\u6237-\U0001f600"]
    counts = {subjects[0]: 3, subjects[1]: 2, subjects[2]: 1, subjects[3]: 2}
    events = [
        sdk_event(id=f"sub-{i}-{n}", subject=subj, time=at + timedelta(seconds=n), data={"n": n})
        for i, subj in enumerate(subjects)
        for n in range(counts[subj])
    ]
    structured, batched = events[:2], events[2:]  # subjects[0] by both modes
    for e in structured:
        m = to_structured(e, JSONFormat())
        r = await post(client, key, m.body, m.headers["content-type"])
        assert r.status == 204, await r.text()
    r = await post(client, key, sdk_batch(batched))
    assert r.status == 204, await r.text()
    binary = to_binary(sdk_event(id="binary-1", subject="by-headers", time=at, data={"n": 1}), JSONFormat())
    assert binary.headers["ce-subject"] == "by-headers"
    ce_headers = {k: v for k, v in binary.headers.items() if k.lower() != "content-type"}
    r = await post(
        client, key, binary.body, binary.headers.get("content-type", "application/json"), **ce_headers
    )
    assert r.status == 400, await r.text()  # the body, {"n": 1}, is no CloudEvent
    assert {d["field"] for d in (await r.json())["details"]} >= {"specversion", "id", "source", "subject"}

    await wait_for(lambda: _count(pool, site, len(events)), what="the SDK's events in the ledger")
    rows = await pool.fetch("SELECT event_id, subject FROM ingest_idempotency WHERE site_id = $1", site)
    assert {r["event_id"]: r["subject"] for r in rows} == {
        ledger_event_id(e.get_source(), e.get_id()): e.get_subject() for e in events
    }

    om = openmeter.Client(endpoint=str(client.server.make_url("")).rstrip("/"), token=key)
    window = {"from_parameter": at, "to": at + timedelta(minutes=1)}

    def read() -> tuple[Any, Any]:
        return (
            om.meters.query_json("events", group_by=["subject"], **window),
            om.meters.query_json("events", subject=[subjects[3], subjects[1]], **window),
        )

    grouped, filtered = await asyncio.to_thread(read)
    assert {row.subject: row.value for row in grouped.data} == counts
    assert {row.subject: row.value for row in filtered.data} == {subjects[3]: 2, subjects[1]: 2}
