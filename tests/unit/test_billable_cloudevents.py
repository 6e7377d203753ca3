"""The billable topic's messages parse as CloudEvents (Kafka binding, binary mode) with the official
SDK, both its current API (cloudevents.core.bindings.kafka) and the v1 one (cloudevents.v1.kafka),
and the value stays the billable.v1 JSON existing consumers read."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

import orjson
from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.formats.json import JSONFormat
from cloudevents.v1 import kafka as ce_kafka_v1
from opsmantik.gateway.cloudevents import ledger_event_id
from opsmantik.schema_files import json_schema
from opsmantik.worker.billable import CE_DATASCHEMA, _iso, ce_headers, ce_source, to_billable
from opsmantik.worker.ledger import LedgerRow

SITE = uuid.UUID("0b6f2a52-38c4-4d31-9d4c-4e0c8f6f7d10")
OCCURRED = datetime(2026, 12, 3, 9, 59, 58, 123456, tzinfo=UTC)


def row(event_id: str, properties: str | None = None) -> LedgerRow:
    now = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)
    return LedgerRow(
        SITE, event_id, "prompt", OCCURRED, date(2026, 12, 1), date(2026, 12, 1), 7, "included",
        "kafka", now, now, 3, 41, properties,
    )  # fmt: skip


def message(r: LedgerRow) -> tuple[dict[str, bytes], bytes, bytes]:
    site = str(r.site_id)
    headers = ce_headers(r, ce_source(site), _iso(r.occurred_at))
    names = [k for k, _ in headers]
    assert len(names) == len(set(names)), names
    as_dict = {k: v for k, v in headers if isinstance(v, bytes)}
    assert len(as_dict) == len(headers)
    return as_dict, site.encode(), to_billable(r, site)


def test_a_sync_event_reads_back_as_a_cloudevent() -> None:
    r = row("order-1", '{"plan": "pro"}')
    headers, key, value = message(r)
    event = ce_kafka.from_binary(ce_kafka.KafkaMessage(headers, key, value), JSONFormat())
    assert event.get_specversion() == "1.0"
    assert event.get_id() == "order-1"
    assert event.get_source() == f"urn:opsmantik:site:{SITE}"
    assert event.get_type() == "dev.opsmantik.billable.v1"
    assert event.get_time() == OCCURRED
    assert event.get_subject() is None  # an /api/sync event has none
    assert event.get_datacontenttype() == "application/json"
    assert event.get_dataschema() == CE_DATASCHEMA == json_schema("billable.v1.json")["$id"]
    assert event.get_extension("partitionkey") == str(SITE)  # the Kafka key: site_id
    # The data is the unchanged value: what existing consumers parse.
    assert event.get_data() == orjson.loads(value)
    assert orjson.loads(value)["event_id"] == "order-1" and orjson.loads(value)["v"] == 1


def test_a_cloudevent_keeps_its_subject_and_the_v1_api_reads_it_too() -> None:
    event_id = ledger_event_id("service-0", "00001")
    props = orjson.dumps({"ce": {"id": "00001", "source": "service-0", "subject": "customer-1"}, "data": {}})
    headers, key, value = message(row(event_id, props.decode()))
    assert headers["ce_subject"] == b"customer-1"
    event = ce_kafka_v1.from_binary(ce_kafka_v1.KafkaMessage(headers=headers, key=key, value=value))
    assert event["id"] == event_id and event["subject"] == "customer-1"
    assert event["source"] == f"urn:opsmantik:site:{SITE}" and event["specversion"] == "1.0"
    assert event["dataschema"] == CE_DATASCHEMA
    assert event.get_data()["properties"]["ce"]["source"] == "service-0"


def test_no_subject_when_the_properties_have_none() -> None:
    for props in [None, "{}", '{"ce": 5}', '{"ce": {"subject": 5}}']:
        headers, _, _ = message(row(ledger_event_id("s", "i"), props))
        assert "ce_subject" not in headers, props
    # an /api/sync event's own `ce` property is not a CloudEvent's
    headers, _, _ = message(row("ce-lookalike", '{"ce": {"subject": "x"}}'))
    assert "ce_subject" not in headers
