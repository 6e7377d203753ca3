"""The batch fast path of POST /api/sync (events.py `_common_events`, the `Event.wire` bytes and
to_messages' splice; issue 28) against the full validator and the dict serialisation it
short-cuts.

Random batches of events, valid and not, common-shaped and not, with repeated ids and times:
`parse_request` must answer exactly what it answers with the fast paths switched off (every
event through `validate_event_full`): the same events, the same errors (index, field, message),
the same in-batch dedupe, the same 413; and every message to_messages builds from the fast
path's events must be byte for byte the message it builds from the full validator's."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opsmantik import events as ev
from opsmantik.events import (
    MAX_PROPERTIES_BYTES,
    MAX_QUANTITY,
    MAX_SUBJECT_CHARS,
    MAX_TYPE_CHARS,
    Event,
    Limits,
    Parsed,
    parse_request,
)

from tests.unit.test_events_fast_path import events as arbitrary_events
from tests.unit.test_events_fast_path import timestamps

NOW = datetime(2026, 12, 6, 12, 0, 0, tzinfo=UTC)
LIMITS = Limits(max_events=12)


@contextmanager
def full_validator_only() -> Iterator[None]:
    """parse_request as it is without any fast path: each event through validate_event_full."""
    mp = pytest.MonkeyPatch()
    mp.setattr(ev, "_common_events", lambda items, now, limits: [])
    mp.setattr(ev, "_common_event", lambda item, now, limits: None)
    try:
        yield
    finally:
        mp.undo()


def first_of_each_id(events: list[Event]) -> tuple[list[Event], list[int]]:
    """The in-batch dedupe as Parsed documents it, computed here independently."""
    distinct: list[Event] = []
    slots: list[int] = []
    where: dict[str, int] = {}
    for e in events:
        if e.event_id not in where:
            where[e.event_id] = len(distinct)
            distinct.append(e)
        slots.append(where[e.event_id])
    return distinct, slots


def common_time_text(draw: st.DrawFn) -> str:
    """A time in the window, written as clients write it (Z or +00:00, 0-9 fraction digits)."""
    dt = draw(
        st.datetimes(
            min_value=datetime(2026, 11, 2, 0, 0),
            max_value=datetime(2026, 12, 6, 12, 4),
            timezones=st.just(UTC),
        )
    )
    digits = draw(st.sampled_from([0, 0, 1, 3, 3, 6, 7, 9]))
    frac = "" if digits == 0 else "." + f"{dt.microsecond:06d}{draw(st.integers(0, 999)):03d}"[:digits]
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + frac + draw(st.sampled_from(["Z", "+00:00"]))


# One field pushed to or past its edge (index = the strategy's `edge` draw; 0: none). The
# strategy draws them at random; test_each_edge_value_alone goes through every one.
EDGES: dict[str | None, list[Any]] = {
    None: [],
    "type": ["", "x" * 65, "a\x00", 7],
    "event_id": ["", "a b", "ce~" + "0" * 64, "x" * 129, "٣", 5],
    "quantity": [0, -1, MAX_QUANTITY + 1, 5.0, 5.5, True, None, "1"],
    "occurred_at": [
        "2026-12-06T12:05:00.000001Z",  # 5 min + 1 µs ahead
        "2026-12-06T12:05:00Z",  # exactly 5 min ahead: accepted
        "2026-11-01T12:00:00Z",  # exactly 35 days old: accepted
        "2026-11-01T11:59:59.9999999Z",  # 1 µs older (the 7th digit is cut)
        "2026-02-30T00:00:00Z",
        "2026-12-06T24:00:00Z",
        "2026-12-06T11:59:60Z",
        "2026-12-06T11:59:00+01:00",
        "2026-12-06T11:59:00-00:00",
        "2026-12-06T11:59:00z",
        "2026-12-06 11:59:00Z",
        "2026-12-06T11:59:00.Z",
        "2026-12-06T11:59:00.1234567890Z",
        "２026-12-06T11:59:00Z",
        None,
    ],
    "subject": ["", "s" * 257, "a\x00", 3],
    "properties": [
        [],
        "x",
        {"a": "\x00"},
        {"k\x00": 1},
        {"a": "x" * (MAX_PROPERTIES_BYTES - 8)},  # 16384 bytes serialised: accepted
        {"a": "x" * (MAX_PROPERTIES_BYTES - 7)},  # one byte over
    ],
}


@st.composite
def common_events(draw: st.DrawFn, times: list[str], ids: list[str]) -> dict[str, Any]:
    """Mostly the common shape, sometimes one field pushed to or past its edge."""
    item: dict[str, Any] = {
        "event_id": draw(st.sampled_from(ids)),
        "type": draw(st.sampled_from(["page_view", "api_call", "x" * 64, "é✓", 'q"\\'])),
        "occurred_at": draw(st.sampled_from(times)),
    }
    if draw(st.booleans()):
        item["quantity"] = draw(st.sampled_from([1, 1, 2, 37, MAX_QUANTITY]))
    if draw(st.booleans()):
        item["properties"] = draw(
            st.one_of(
                st.none(),
                st.dictionaries(
                    st.text(max_size=4),
                    st.one_of(st.text(max_size=4), st.integers(), st.floats(allow_nan=False), st.none()),
                    max_size=3,
                ),
                st.just({"path": "/pricing", "plan": "pro", "ref": "bench"}),
                st.just({"nested": {"list": [1, "two", None], "s": "a\\u0000"}}),
            )
        )
    if draw(st.integers(0, 3)) == 0:
        item["subject"] = draw(st.one_of(st.none(), st.sampled_from(["cust-1", "ü", 'a"b', "s" * 256])))
    edge = draw(st.integers(0, 14))
    if edge <= len(EDGES) - 1:  # 1-6: EDGES' fields (0, and 9-14 below: the common shape as drawn)
        field, values = list(EDGES.items())[edge]
        if field is not None:
            item[field] = draw(st.sampled_from(values))
    elif edge == 7:
        item[draw(st.sampled_from(["site_id", "extra", "Type"]))] = 1
    elif edge == 8:
        del item[draw(st.sampled_from(["event_id", "type", "occurred_at"]))]
    return item


@st.composite
def batches(draw: st.DrawFn) -> list[Any]:
    times = [common_time_text(draw) for _ in range(draw(st.integers(1, 4)))]
    ids = [f"e-{i}" for i in range(draw(st.integers(1, 12)))]
    item = st.one_of(common_events(times, ids), common_events(times, ids), arbitrary_events())
    return draw(st.lists(item, min_size=1, max_size=14))


def _body(doc: Any) -> bytes:
    return json.dumps(doc, ensure_ascii=False).encode()  # any int (orjson.dumps stops at 64 bits)


def _both(body: bytes) -> tuple[Parsed, Parsed]:
    fast = parse_request(body, NOW, LIMITS)
    with full_validator_only():
        full = parse_request(body, NOW, LIMITS)
    return fast, full


def _same_answer(fast: Parsed, full: Parsed) -> None:
    assert fast.too_many == full.too_many
    assert [e.as_dict() for e in fast.errors] == [e.as_dict() for e in full.errors]
    assert fast.events == full.events
    assert [e.occurred_at.tzinfo for e in fast.events] == [UTC] * len(fast.events)
    # the dedupe, against an independent computation
    assert (fast.distinct, fast.slots) == first_of_each_id(full.events)
    assert (full.distinct, full.slots) == first_of_each_id(full.events)


@settings(max_examples=250, deadline=None)
@given(batches())
def test_a_batch_gets_the_answer_the_full_validator_gives(items: list[Any]) -> None:
    _same_answer(*_both(_body({"events": items})))


def test_each_edge_value_alone_gets_the_answer_the_full_validator_gives() -> None:
    """Every edge value of EDGES, each in a batch of common events (the random draws above reach
    them only sometimes), with a subject and properties beside it."""
    good = {"event_id": "e-0", "type": "api_call", "occurred_at": "2026-12-06T11:00:00Z"}
    accepted_edges = {
        "type": ["x" * MAX_TYPE_CHARS],
        "event_id": ["x" * 128, "ce~" + "0" * 64],
        "quantity": [MAX_QUANTITY],
        "subject": ["s" * MAX_SUBJECT_CHARS, None],
    }
    site = uuid.UUID(int=7)
    for field, values in [*EDGES.items(), *accepted_edges.items()]:
        for value in values:
            odd = {**good, "event_id": "e-1", "subject": "cust-1", "properties": {"p": 1}, field: value}
            fast, full = _both(_body({"events": [good, odd, {**good, "event_id": "e-2"}]}))
            _same_answer(fast, full)
            if not fast.errors:  # accepted at the edge: the spliced bytes are the dict's
                assert all(e.wire is None for e in full.distinct)  # the reference is the dict
                statuses = ["accepted"] * len(full.distinct)
                wanted = ev.to_messages(full.distinct, site, NOW, path="kafka", gateway_statuses=statuses)
                got = ev.to_messages(fast.distinct, site, NOW, path="kafka", gateway_statuses=statuses)
                assert got == wanted


@settings(max_examples=100, deadline=None)
@given(batches())
def test_a_single_event_body_gets_the_answer_the_full_validator_gives(items: list[Any]) -> None:
    _same_answer(*_both(_body(items[0])))


@settings(max_examples=200, deadline=None)
@given(
    batches(),
    st.lists(st.sampled_from(["accepted", "overlimit", "degraded", "fallback"]), min_size=14, max_size=14),
    st.sampled_from(["kafka", "fallback"]),
    st.datetimes(timezones=st.just(UTC)),
)
def test_the_spliced_messages_are_the_dict_serialisation_byte_for_byte(
    items: list[Any], statuses: list[str], path: str, received: datetime
) -> None:
    fast, full = _both(_body({"events": items}))
    if fast.errors:
        return
    site = uuid.UUID(int=len(items) * 7919)
    wanted = ev.to_messages(
        full.distinct, site, received, path=path, gateway_statuses=statuses[: len(full.distinct)]
    )
    assert all(e.wire is None for e in full.distinct)  # the reference is the dict, not the splice
    got = ev.to_messages(
        fast.distinct, site, received, path=path, gateway_statuses=statuses[: len(fast.distinct)]
    )
    assert got == wanted


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_the_time_text_is_iso_of_the_time(data: st.DataObject) -> None:
    """The message's occurred_at is `iso(occurred_at)`, usage_month its month, whatever the
    fraction's digits (fromisoformat cuts a 7th-9th digit; so does parse_time)."""
    raw = common_time_text(data.draw)
    (event,) = parse_request(_body({"event_id": "a", "type": "t", "occurred_at": raw}), NOW).events
    assert event.wire is not None
    doc = orjson.loads(b"{" + event.wire + b"}")
    assert doc["occurred_at"] == ev.iso(event.occurred_at) == ev.iso(ev.parse_time(raw))  # type: ignore[arg-type]
    assert doc["usage_month"] == event.usage_month.isoformat()


@settings(max_examples=100, deadline=None)
@given(timestamps())
def test_any_time_text_gets_the_full_validators_answer(raw: str) -> None:
    item = {"event_id": "a", "type": "t", "occurred_at": raw}
    _same_answer(*_both(_body({"events": [item, {**item, "event_id": "b"}]})))


def test_the_common_shape_takes_the_fast_path() -> None:
    """The bench's and most clients' events are spliced (a regression to the dict path would pass
    the tests above unseen)."""
    t = (NOW - timedelta(seconds=30)).isoformat(timespec="seconds")
    body = _body(
        {
            "events": [
                {
                    "event_id": "a",
                    "type": "page_view",
                    "occurred_at": t,
                    "quantity": 1,
                    "properties": {"p": 1},
                },
                {"event_id": "b", "type": "page_view", "occurred_at": "2026-12-06T11:59:00.123Z"},
                {"event_id": "c", "type": "t", "occurred_at": t, "subject": "cust", "properties": None},
            ]
        }
    )
    parsed = parse_request(body, NOW)
    assert [e.wire is not None for e in parsed.events] == [True, True, True]
    assert parsed.distinct == parsed.events and parsed.slots == [0, 1, 2]


def test_after_an_uncommon_event_the_rest_are_still_validated_in_full() -> None:
    """The fast loop stops at the first event it declines; every later one is judged too."""
    t = "2026-12-06T11:59:00Z"
    body = _body(
        {
            "events": [
                {"event_id": "a", "type": "t", "occurred_at": t},
                {"event_id": "b", "type": "t", "occurred_at": "2026-12-06T12:59:00+01:00"},  # valid
                {"event_id": "c", "type": "", "occurred_at": t},
                {"event_id": "d", "type": "t", "occurred_at": t, "quantity": 0},
            ]
        }
    )
    fast, full = _both(body)
    _same_answer(fast, full)
    assert [(e.index, e.field) for e in fast.errors] == [(2, "type"), (3, "quantity")]
