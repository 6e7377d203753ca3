"""Every rule of DESIGN.md's event table, at its edge: the limit passes, one past it fails."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from opsmantik.events import Limits, parse_request, parse_time, to_message

NOW = datetime(2026, 3, 10, 12, 0, 0, tzinfo=UTC)


def ev(**over: object) -> dict[str, object]:
    base: dict[str, object] = {"event_id": "e-1", "type": "call", "occurred_at": "2026-03-10T11:00:00Z"}
    base.update(over)
    return {k: v for k, v in base.items() if v is not ...}


def parse(doc: object, limits: Limits | None = None):
    return parse_request(orjson.dumps(doc), NOW, limits or Limits())


def fields(doc: object) -> list[tuple[int | None, str | None]]:
    return [(e.index, e.field) for e in parse(doc).errors]


def test_single_event_and_defaults() -> None:
    p = parse(ev())
    assert not p.errors and len(p.events) == 1
    e = p.events[0]
    assert (e.event_id, e.type, e.quantity, e.properties) == ("e-1", "call", 1, None)
    assert e.occurred_at == datetime(2026, 3, 10, 11, tzinfo=UTC)
    assert str(e.usage_month) == "2026-03-01"


def test_event_id_edges() -> None:
    assert not parse(ev(event_id="a" * 128)).errors
    assert fields(ev(event_id="a" * 129)) == [(0, "event_id")]
    assert fields(ev(event_id="")) == [(0, "event_id")]
    assert not parse(ev(event_id="A.b_c:d-9")).errors
    for bad in ("a b", "a/b", "é", "a\n", 7, None):
        assert fields(ev(event_id=bad)) == [(0, "event_id")], bad


def test_type_edges() -> None:
    assert not parse(ev(type="t" * 64)).errors
    assert fields(ev(type="t" * 65)) == [(0, "type")]
    assert fields(ev(type="")) == [(0, "type")]
    assert fields(ev(type="a\x00")) == [(0, "type")]
    assert fields(ev(type=3)) == [(0, "type")]


def test_occurred_at_window_edges() -> None:
    oldest = NOW - timedelta(days=35)
    newest = NOW + timedelta(minutes=5)
    assert not parse(ev(occurred_at=oldest.isoformat())).errors
    assert fields(ev(occurred_at=(oldest - timedelta(microseconds=1)).isoformat())) == [(0, "occurred_at")]
    assert not parse(ev(occurred_at=newest.isoformat())).errors
    assert fields(ev(occurred_at=(newest + timedelta(microseconds=1)).isoformat())) == [(0, "occurred_at")]


def test_occurred_at_format() -> None:
    assert parse_time("2026-03-10T13:00:00+01:00") == datetime(2026, 3, 10, 12, tzinfo=UTC)
    assert parse_time("2026-03-10t12:00:00.123456789z") == datetime(2026, 3, 10, 12, 0, 0, 123456, tzinfo=UTC)
    for bad in (
        "2026-03-10T12:00:00",
        "2026-03-10",
        "2026-02-30T00:00:00Z",
        "2026-03-10T24:00:00Z",
        "2026-03-10T12:00:00+25:00",
        "2026-03-10T12:00:00Z\n",
        "now",
        "٢٠٢٦-03-10T12:00:00Z",
    ):
        assert parse_time(bad) is None, bad
    assert fields(ev(occurred_at=1700000000)) == [(0, "occurred_at")]


def test_usage_month_is_utc_month() -> None:
    e = parse_request(orjson.dumps(ev(occurred_at="2026-03-01T00:30:00+01:00")), NOW).events[0]
    assert str(e.usage_month) == "2026-02-01"


def test_quantity_edges() -> None:
    assert parse(ev(quantity=1)).events[0].quantity == 1
    assert parse(ev(quantity=10**12)).events[0].quantity == 10**12
    assert parse(ev(quantity=5.0)).events[0].quantity == 5  # JSON: 5.0 is the integer 5
    assert type(parse(ev(quantity=1e12)).events[0].quantity) is int
    for bad in (0, -1, 10**12 + 1, 1.5, 0.0, 1e12 + 1, "1", True, None, 10**30):
        assert fields(ev(quantity=bad) if bad != 10**30 else ev(quantity=1e30)) == [(0, "quantity")], bad


def test_properties_edges() -> None:
    overhead = len(orjson.dumps({"k": ""}))
    at_limit = {"k": "x" * (16 * 1024 - overhead)}
    assert len(orjson.dumps(at_limit)) == 16 * 1024
    assert not parse(ev(properties=at_limit)).errors
    assert fields(ev(properties={"k": "x" * (16 * 1024 - overhead + 1)})) == [(0, "properties")]
    assert not parse(ev(properties=None)).errors
    assert fields(ev(properties=[1])) == [(0, "properties")]
    assert fields(ev(properties={"a": ["ok", {"b\x00": 1}]})) == [(0, "properties")]
    assert not parse(ev(properties={"a": "back\\u0000slash"})).errors


def test_unknown_and_missing_fields() -> None:
    assert fields(ev(site_id=str(uuid.uuid4()))) == [(0, "site_id")]
    assert sorted(fields({"type": "x"})) == [(0, "event_id"), (0, "occurred_at")]


def test_batch_all_or_nothing_with_indexes() -> None:
    p = parse({"events": [ev(), ev(event_id="bad id"), ev(quantity=0)]})
    assert p.events == []
    assert [(e.index, e.field) for e in p.errors] == [(1, "event_id"), (2, "quantity")]


def test_batch_size_edges() -> None:
    limits = Limits(max_events=3)
    assert len(parse({"events": [ev(event_id=f"e{i}") for i in range(3)]}, limits).events) == 3
    assert parse({"events": [ev(event_id=f"e{i}") for i in range(4)]}, limits).too_many
    assert fields({"events": []}) == [(None, "events")]
    assert fields({"events": {}}) == [(None, "events")]
    assert fields({"events": [ev()], "extra": 1}) == [(None, "extra")]
    assert fields({"events": [7]}) == [(0, "")]


@pytest.mark.parametrize(
    "body", [b"", b"{", b"[]", b"null", b"\xff\xfe", b'{"a": NaN}', b"1e400", b"[" * 2000, b'"\\ud800"']
)
def test_bad_json_is_an_error_not_an_exception(body: bytes) -> None:
    p = parse_request(body, NOW)
    assert p.errors and not p.events and p.errors[0].index is None


def test_message_follows_event_v1() -> None:
    e = parse(ev(properties={"p": 1}, quantity=5)).events[0]
    site = uuid.uuid4()
    msg = orjson.loads(to_message(e, site, NOW, path="fallback", gateway_status="fallback"))
    assert msg == {
        "v": 1,
        "site_id": str(site),
        "event_id": "e-1",
        "type": "call",
        "occurred_at": "2026-03-10T11:00:00.000000+00:00",
        "usage_month": "2026-03-01",
        "quantity": 5,
        "properties": {"p": 1},
        "received_at": "2026-03-10T12:00:00.000000+00:00",
        "path": "fallback",
        "gateway_status": "fallback",
    }
    schema = orjson.loads(Path("schemas/event.v1.json").read_bytes())
    # every field but the optional subject (written only when set: tests/unit/test_subject.py)
    assert set(msg) == set(schema["properties"]) - {"subject"} and set(schema["required"]) <= set(msg)
