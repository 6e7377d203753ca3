"""services/opsmantik/gateway/cloudevents.py: CloudEvents → ingest Events, every limit at its edge."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from opsmantik.config import Settings, SettingsError, parse_quantity_pointers
from opsmantik.events import (
    CLOUDEVENT_ID,
    EVENT_ID,
    MAX_PROPERTIES_BYTES,
    Event,
    Limits,
    field_errors,
    validate_event,
)
from opsmantik.gateway.cloudevents import (
    BATCH,
    JSON,
    MAX_ID_CHARS,
    MAX_SOURCE_CHARS,
    MAX_SUBJECT_CHARS,
    SINGLE,
    ledger_event_id,
    parse_cloudevents,
    validate_cloudevent,
)

NOW = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)


def ce(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "specversion": "1.0",
        "id": "5c10fade-1c9e-4d6c-8275-c52c36731d3c",
        "source": "service-name",
        "type": "prompt",
        "subject": "customer-1",
    }
    base.update(kw)
    return {k: v for k, v in base.items() if v is not ...}


def fields_of(result: Event | list[tuple[str, str]]) -> list[str]:
    assert isinstance(result, list), result
    return [f for f, _ in result]


def ok(item: object, pointers: dict[str, tuple[str, ...]] | None = None) -> Event:
    result = validate_cloudevent(item, NOW, pointers or {})
    assert isinstance(result, Event), result
    return result


def test_the_mapping() -> None:
    e = ok(ce(time="2026-12-03T09:00:00.5+01:00", data={"tokens": 7}, dataschema="https://x.dev/s.json"))
    assert e.event_id == ledger_event_id("service-name", "5c10fade-1c9e-4d6c-8275-c52c36731d3c")
    assert e.type == "prompt"
    assert e.occurred_at == datetime(2026, 12, 3, 8, 0, 0, 500000, tzinfo=UTC)
    assert e.quantity == 1  # no pointer for the type: the event counts 1
    assert e.properties == {
        "ce": {
            "source": "service-name",
            "id": "5c10fade-1c9e-4d6c-8275-c52c36731d3c",
            "subject": "customer-1",
            "dataschema": "https://x.dev/s.json",
        },
        "data": {"tokens": 7},
    }


def test_time_defaults_to_the_received_time() -> None:
    assert ok(ce()).occurred_at == NOW
    assert ok(ce(time=None)).occurred_at == NOW  # an optional attribute given as null is absent


def test_time_window_and_format() -> None:
    assert ok(ce(time=(NOW + timedelta(minutes=5)).isoformat())).occurred_at == NOW + timedelta(minutes=5)
    assert ok(ce(time=(NOW - timedelta(days=35)).isoformat())).occurred_at == NOW - timedelta(days=35)
    for bad in [
        (NOW + timedelta(minutes=5, microseconds=1)).isoformat(),
        (NOW - timedelta(days=35, microseconds=1)).isoformat(),
        "2026-12-03T10:00:00",  # no offset
        "yesterday",
        17,
    ]:
        assert fields_of(validate_cloudevent(ce(time=bad), NOW, {})) == ["time"], bad


def test_ledger_event_id_is_deterministic_distinct_and_disjoint_from_sync_ids() -> None:
    a = ledger_event_id("s", "1")
    assert a == ledger_event_id("s", "1") and CLOUDEVENT_ID.fullmatch(a) and len(a) == 67
    # No separator to confuse: ("a,b", "c") vs ("a", "b,c") and friends
    pairs = [("a", "b:c"), ("a:b", "c"), ("ab", "c"), ("a", "bc"), ('a"', "bc"), ("s", "1"), ("t", "1")]
    assert len({ledger_event_id(*p) for p in pairs}) == len(pairs)
    # A CloudEvent's id can never be an /api/sync id: `~` is not in the alphabet ...
    assert not EVENT_ID.fullmatch(a)
    # ... and /api/sync refuses one (naming event_id), while the topic's rules (the worker's) take it.
    refused = validate_event({"event_id": a, "type": "t", "occurred_at": NOW.isoformat()}, NOW)
    assert fields_of(refused) == ["event_id"]
    assert field_errors({"event_id": a, "type": "t"}) == []
    assert field_errors({"event_id": "ce~" + "0" * 63, "type": "t"}) != []


@pytest.mark.parametrize(
    ("name", "limit"), [("id", MAX_ID_CHARS), ("source", MAX_SOURCE_CHARS), ("subject", MAX_SUBJECT_CHARS)]
)
def test_required_text_attributes_at_their_edges(name: str, limit: int) -> None:
    assert ok(ce(**{name: "x" * limit}))
    for bad in ["x" * (limit + 1), "", 5, "a\x00b"]:
        assert fields_of(validate_cloudevent(ce(**{name: bad}), NOW, {})) == [name], bad
    assert fields_of(validate_cloudevent(ce(**{name: ...}), NOW, {})) == [name]
    assert fields_of(validate_cloudevent(ce(**{name: None}), NOW, {})) == [name]


def test_type_is_the_ledgers_type() -> None:
    assert ok(ce(type="t" * 64)).type == "t" * 64
    assert fields_of(validate_cloudevent(ce(type="t" * 65), NOW, {})) == ["type"]
    assert fields_of(validate_cloudevent(ce(type=...), NOW, {})) == ["type"]


def test_specversion_must_be_1_0() -> None:
    assert fields_of(validate_cloudevent(ce(specversion="0.3"), NOW, {})) == ["specversion"]
    assert fields_of(validate_cloudevent(ce(specversion=1.0), NOW, {})) == ["specversion"]
    assert fields_of(validate_cloudevent(ce(specversion=...), NOW, {})) == ["specversion"]


def test_source_is_a_uri_reference() -> None:
    assert ok(ce(source="/a/b?c=d#e"))
    assert ok(ce(source="urn:x:y"))
    assert fields_of(validate_cloudevent(ce(source="a b"), NOW, {})) == ["source"]
    assert fields_of(validate_cloudevent(ce(source="a\tb"), NOW, {})) == ["source"]


def test_data_must_be_an_object_and_fit() -> None:
    assert ok(ce(data=None)).properties == {"ce": ce_attrs(), "data": None}
    for bad in [[1], "x", 5, True]:
        assert fields_of(validate_cloudevent(ce(data=bad), NOW, {})) == ["data"]
    assert fields_of(validate_cloudevent(ce(data={"k": "a\x00"}), NOW, {})) == ["data"]
    assert fields_of(validate_cloudevent(ce(data_base64="AAAA"), NOW, {})) == ["data_base64"]
    overhead = len(orjson.dumps({"ce": ce_attrs(), "data": {"k": ""}}))
    fits = {"k": "x" * (MAX_PROPERTIES_BYTES - overhead)}
    assert ok(ce(data=fits))
    result = validate_cloudevent(ce(data={"k": fits["k"] + "x"}), NOW, {})
    assert fields_of(result) == ["data"] and "16384" in result[0][1]  # type: ignore[index]


def ce_attrs() -> dict[str, str]:
    return {"source": "service-name", "id": "5c10fade-1c9e-4d6c-8275-c52c36731d3c", "subject": "customer-1"}


def test_datacontenttype_and_dataschema() -> None:
    assert ok(ce(datacontenttype="application/json"))
    assert ok(ce(datacontenttype=None))
    assert fields_of(validate_cloudevent(ce(datacontenttype="text/plain"), NOW, {})) == ["datacontenttype"]
    assert fields_of(validate_cloudevent(ce(dataschema="not a uri"), NOW, {})) == ["dataschema"]


def test_extension_attributes() -> None:
    e = ok(ce(traceparent="00-abc", sequence=3, flag=True, gone=None))
    assert e.properties is not None
    assert e.properties["ce"] | {} == ce_attrs() | {"traceparent": "00-abc", "sequence": 3, "flag": True}
    assert ok(ce(**{"a" * 20: "x" * 256}))
    for name, value in [("a" * 21, "x"), ("Upper", "x"), ("ok", "x" * 257), ("ok", {"a": 1}), ("ok", [1])]:
        assert fields_of(validate_cloudevent(ce(**{name: value}), NOW, {})) == [name[:64]], (name, value)


def test_quantity_by_pointer() -> None:
    pointers = {"prompt": ("usage", "tokens"), "*": ("n",)}
    assert ok(ce(data={"usage": {"tokens": 12}}), pointers).quantity == 12
    assert ok(ce(data={"usage": {"tokens": "12"}}), pointers).quantity == 12  # OpenMeter's "duration": "12"
    assert ok(ce(data={"usage": {"tokens": 12.0}}), pointers).quantity == 12
    assert ok(ce(data={"usage": {"tokens": 10**12}}), pointers).quantity == 10**12
    assert ok(ce(type="other", data={"n": 3}), pointers).quantity == 3  # the "*" pointer
    assert ok(ce(type="other", data={"n": [4]}), {"other": ("n", "0")}).quantity == 4
    for data in [
        {"usage": {"tokens": 0}},
        {"usage": {"tokens": 10**12 + 1}},
        {"usage": {"tokens": 1.5}},
        {"usage": {"tokens": "1.5"}},
        {"usage": {"tokens": "-3"}},
        {"usage": {"tokens": True}},
        {"usage": {}},
        {},
        None,
    ]:
        result = validate_cloudevent(ce(data=data), NOW, pointers)
        assert fields_of(result) == ["data"], data
        assert "/usage/tokens" in result[0][1]  # type: ignore[index]


def test_errors_name_every_attribute() -> None:
    result = validate_cloudevent({"specversion": "1.0", "data": 1}, NOW, {})
    assert sorted(fields_of(result)) == ["data", "id", "source", "subject", "type"]


def test_media_types_and_shapes() -> None:
    one, two = orjson.dumps(ce()), orjson.dumps([ce(), ce(id="2")])
    assert len(parse_cloudevents(one, SINGLE, NOW, {}).events) == 1
    assert len(parse_cloudevents(two, BATCH, NOW, {}).events) == 2
    assert len(parse_cloudevents(one, JSON, NOW, {}).events) == 1
    assert len(parse_cloudevents(two, JSON, NOW, {}).events) == 2
    for body, media in [(two, SINGLE), (one, BATCH), (b"5", JSON), (b"[]", BATCH), (b"{", JSON)]:
        parsed = parse_cloudevents(body, media, NOW, {})
        assert not parsed.events and parsed.errors[0].index is None, (body, media)
    bad = parse_cloudevents(orjson.dumps([ce(), ce(id="")]), BATCH, NOW, {})
    assert not bad.events and [(e.index, e.field) for e in bad.errors] == [(1, "id")]  # all or nothing


def test_batch_size_at_its_edge() -> None:
    limits = Limits(max_events=3)
    assert len(parse_cloudevents(orjson.dumps([ce()] * 3), BATCH, NOW, {}, limits).events) == 3
    assert parse_cloudevents(orjson.dumps([ce()] * 4), BATCH, NOW, {}, limits).too_many


def test_quantity_setting_is_parsed_with_every_problem_listed() -> None:
    assert parse_quantity_pointers('{"prompt": "/usage/tokens", "*": "/a~1b/c~0d"}') == (
        {"prompt": ("usage", "tokens"), "*": ("a/b", "c~d")},
        [],
    )
    assert Settings(cloudevents_quantity="{}").validate() == []
    with pytest.raises(SettingsError) as exc:
        Settings.from_env({"OPSMANTIK_CLOUDEVENTS_QUANTITY": '{"a": "tokens", "": "/x", "b": "/~2", "c": 5}'})
    problems = [p for p in exc.value.problems if "CLOUDEVENTS_QUANTITY" in p]
    assert len(problems) == 4, problems
    for raw in ["[", '["/x"]']:
        assert parse_quantity_pointers(raw)[1], raw


def test_prefer_return_representation() -> None:
    from opsmantik.gateway.routes_cloudevents import wants_representation

    for yes in [
        "return=representation",
        'respond-async, RETURN="representation"; x=y',
        "wait=5,return=representation",
    ]:
        assert wants_representation(yes), yes
    for no in [None, "", "return=minimal", "representation", "return=representationx", "handling=strict"]:
        assert not wants_representation(no), no
