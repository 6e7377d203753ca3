"""Properties nest at most MAX_PROPERTIES_DEPTH levels: the deepest a message can hold (orjson
serialises 254 levels; a message holds properties one level down). Deeper is a 400 naming
properties, on the batch fast path, after an uncommon event (the full validator) and through
CloudEvents; at the edge every path writes its message. Before the rule the deepest accepted
properties failed in the message's serialisation (a TypeError: a 500), and deeper ones in the
validator itself."""

from __future__ import annotations

import json
import sys
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from opsmantik.events import MAX_PROPERTIES_DEPTH, parse_request, to_messages

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
COMMON = "2026-12-06T11:00:00Z"
UNCOMMON = "2026-12-06T12:30:00+00:30"  # valid, off the fast path: the full validator's turn


def nested(levels: int) -> dict[str, Any]:
    value: Any = 1
    for _ in range(levels):
        value = {"a": value}
    return value


def body(levels: int, first_time: str) -> bytes:
    events = [
        {"event_id": "e-0", "type": "t", "occurred_at": first_time},
        {"event_id": "e-1", "type": "t", "occurred_at": COMMON, "properties": nested(levels)},
    ]
    return json.dumps({"events": events}).encode()


@pytest.fixture(autouse=True)
def deep_recursion() -> Any:
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, 5000))  # json.dumps of the test bodies
    yield
    sys.setrecursionlimit(old)


@pytest.mark.parametrize("first_time", [COMMON, UNCOMMON], ids=["fast-path", "full-validator"])
def test_the_edge_is_written_and_one_deeper_is_a_400(first_time: str) -> None:
    at_edge = parse_request(body(MAX_PROPERTIES_DEPTH, first_time), NOW)
    assert at_edge.errors == [] and len(at_edge.events) == 2
    for path, status in (("kafka", "accepted"), ("fallback", "fallback")):
        messages = to_messages(at_edge.events, uuid.uuid4(), NOW, path=path, gateway_statuses=[status] * 2)
        assert json.loads(messages[1])["properties"] == nested(MAX_PROPERTIES_DEPTH)
    for levels in (MAX_PROPERTIES_DEPTH + 1, 300, 900):
        over = parse_request(body(levels, first_time), NOW)
        assert [(e.index, e.field, e.message) for e in over.errors] == [
            (1, "properties", f"nested more than {MAX_PROPERTIES_DEPTH} levels deep")
        ]


def test_cloudevents_data_nests_to_the_same_depth() -> None:
    """A CloudEvent's properties are {"ce": attributes, "data": data}: data one level down."""
    from opsmantik.events import Event
    from opsmantik.gateway.cloudevents import validate_cloudevent

    def cloudevent(levels: int) -> dict[str, Any]:
        attributes = {"specversion": "1.0", "id": "i", "source": "s", "type": "t", "subject": "c"}
        return {**attributes, "data": nested(levels)}

    at_edge = validate_cloudevent(cloudevent(MAX_PROPERTIES_DEPTH - 1), NOW, {})
    assert isinstance(at_edge, Event), at_edge
    (message,) = to_messages([at_edge], uuid.uuid4(), NOW, path="kafka", gateway_statuses=["accepted"])
    assert json.loads(message)["properties"]["data"] == nested(MAX_PROPERTIES_DEPTH - 1)
    for levels in (MAX_PROPERTIES_DEPTH, 900):
        assert validate_cloudevent(cloudevent(levels), NOW, {}) == [
            ("data", f"with the kept attributes, nests more than {MAX_PROPERTIES_DEPTH} levels")
        ]
