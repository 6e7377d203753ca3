"""An event's optional `subject` (issue 26): /api/sync's field and a CloudEvent's attribute, 1-256
characters without NUL, carried in the ingest message only when set (schemas/event.v1.json)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from opsmantik.events import MAX_SUBJECT_CHARS, parse_request, to_message
from opsmantik.gateway.cloudevents import parse_cloudevents

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
EVENT = {"event_id": "e-1", "type": "call", "occurred_at": "2026-03-10T11:00:00Z"}
CE = {"specversion": "1.0", "id": "1", "source": "s", "type": "call", "time": "2026-03-10T11:00:00Z"}


def errors(body: object) -> list[tuple[int | None, str | None]]:
    return [(e.index, e.field) for e in parse_request(orjson.dumps(body), NOW).errors]


def test_subject_edges() -> None:
    assert MAX_SUBJECT_CHARS == 256
    for ok in ("c", "x" * 256, "é" * 256, None):
        parsed = parse_request(orjson.dumps({**EVENT, "subject": ok}), NOW)
        assert not parsed.errors and parsed.events[0].subject == ok
    for bad in ("", "x" * 257, "a\x00b", 7, ["c"], {"id": "c"}, True):
        assert errors({**EVENT, "subject": bad}) == [(0, "subject")], bad
    assert errors({"events": [EVENT, {**EVENT, "event_id": "e-2", "subject": "x" * 257}]}) == [(1, "subject")]


def test_message_carries_subject_only_when_set() -> None:
    site = uuid.uuid4()
    schema = orjson.loads(Path("schemas/event.v1.json").read_bytes())
    with_subject = parse_request(orjson.dumps({**EVENT, "subject": "cust-1"}), NOW).events[0]
    msg = orjson.loads(to_message(with_subject, site, NOW, path="kafka", gateway_status="accepted"))
    assert msg["subject"] == "cust-1" and set(msg) <= set(schema["properties"])
    without = parse_request(orjson.dumps(EVENT), NOW).events[0]
    assert "subject" not in orjson.loads(
        to_message(without, site, NOW, path="kafka", gateway_status="accepted")
    )
    null = parse_request(orjson.dumps({**EVENT, "subject": None}), NOW).events[0]
    assert "subject" not in orjson.loads(to_message(null, site, NOW, path="kafka", gateway_status="accepted"))


@pytest.mark.parametrize(("subject", "ok"), [("x" * 256, True), ("x" * 257, False), ("", False), (3, False)])
def test_cloudevent_subject_is_the_event_subject(subject: object, ok: bool) -> None:
    parsed = parse_cloudevents(
        orjson.dumps({**CE, "subject": subject}), "application/cloudevents+json", NOW, {}
    )
    if ok:
        assert not parsed.errors and parsed.events[0].subject == subject
    else:
        assert [(e.index, e.field) for e in parsed.errors] == [(0, "subject")]
