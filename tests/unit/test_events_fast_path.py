"""The validation fast path (events.py `_common_event`, `common_time`; issue 28) against the full
validator it short-cuts: random events and timestamps, valid and not, must get identical results
(the same Event, or the same errors) from `validate_event` and `validate_event_full`."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opsmantik.events import (
    EVENT_ID,
    MAX_QUANTITY,
    Parsed,
    common_time,
    iso,
    parse_request,
    parse_time,
    utc_text,
    validate_event,
    validate_event_full,
)

NOW = datetime(2026, 12, 6, 12, 0, 0, tzinfo=UTC)
CHARS = "0123456789-:.TtZz+ _٣"


def _formats(dt: datetime, offset_min: int, digits: int, style: int) -> str:
    """A time written in one of the shapes clients send (and a few they should not)."""
    local = dt.astimezone(timezone(timedelta(minutes=offset_min)))
    base = local.strftime("%Y-%m-%dT%H:%M:%S")
    frac = "" if digits == 0 else "." + f"{local.microsecond:06d}{local.microsecond % 1000:03d}"[:digits]
    if offset_min == 0 and style == 0:
        tail = "Z"
    elif style == 1:
        tail = "z"
    else:
        sign = "+" if offset_min >= 0 else "-"
        tail = f"{sign}{abs(offset_min) // 60:02d}:{abs(offset_min) % 60:02d}"
    sep = " " if style == 2 else "T"
    return base.replace("T", sep) + frac + tail


@st.composite
def timestamps(draw: st.DrawFn) -> str:
    dt = draw(
        st.datetimes(min_value=datetime(2026, 10, 1), max_value=datetime(2027, 1, 1), timezones=st.just(UTC))
    )
    offset = draw(st.sampled_from([0, 0, 0, 60, -300, 330, 14 * 60]))
    text = _formats(dt, offset, draw(st.sampled_from([0, 0, 1, 3, 3, 6, 7, 9, 10])), draw(st.integers(0, 3)))
    kind = draw(st.integers(0, 5))
    if kind == 0:  # one character replaced
        i = draw(st.integers(0, len(text) - 1))
        text = text[:i] + draw(st.sampled_from(CHARS)) + text[i + 1 :]
    elif kind == 1:  # cut short or grown
        text = text[: draw(st.integers(0, len(text)))] + draw(st.text(CHARS, max_size=3))
    return text


times = st.one_of(timestamps(), timestamps(), st.text(max_size=40), st.integers(), st.none())


@st.composite
def events(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 30)) == 0:
        return draw(st.one_of(st.lists(st.integers(), max_size=2), st.text(max_size=5), st.none()))
    item: dict[str, Any] = {}
    if draw(st.integers(0, 20)):
        item["event_id"] = draw(
            st.one_of(st.from_regex(EVENT_ID, fullmatch=True), st.text(max_size=10), st.integers())
        )
    if draw(st.integers(0, 20)):
        item["type"] = draw(
            st.one_of(st.text(min_size=0, max_size=70), st.sampled_from(["page_view", "x" * 64]))
        )
    if draw(st.integers(0, 20)):
        item["occurred_at"] = draw(times)
    if draw(st.booleans()):
        item["quantity"] = draw(
            st.one_of(
                st.integers(-2, 5),
                st.sampled_from([MAX_QUANTITY, MAX_QUANTITY + 1, 5.0, 5.5, 1e12, True]),
                st.none(),
                st.text(max_size=2),
            )
        )
    if draw(st.integers(0, 3)) == 0:
        item["subject"] = draw(
            st.one_of(st.none(), st.text(max_size=3), st.just("a" * 257), st.just("a\x00"))
        )
    if draw(st.integers(0, 3)) == 0:
        item["properties"] = draw(
            st.one_of(
                st.none(), st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2), st.just([])
            )
        )
    if draw(st.integers(0, 15)) == 0:
        item[draw(st.text(max_size=5))] = 1
    return item


@settings(max_examples=800, deadline=None)
@given(events())
def test_the_fast_path_agrees_with_the_full_validator(item: Any) -> None:
    fast, full = validate_event(item, NOW), validate_event_full(item, NOW)
    assert fast == full
    if not isinstance(full, list):
        assert fast.occurred_at.tzinfo is UTC and full.occurred_at.tzinfo is UTC  # type: ignore[union-attr]


@settings(max_examples=800, deadline=None)
@given(timestamps())
def test_common_time_reads_what_parse_time_reads(raw: str) -> None:
    fast = common_time(raw)
    if fast is not None:  # the fast reader declines whatever it is unsure of; it never differs
        assert fast == parse_time(raw) and fast.tzinfo is UTC


def test_the_common_shapes_take_the_fast_path() -> None:
    for raw in ("2026-12-06T11:59:00Z", "2026-12-06T11:59:00.123Z", "2026-12-06T11:59:00.123456+00:00"):
        assert common_time(raw) == parse_time(raw) is not None
    for raw in (
        "2026-12-06t11:59:00Z",
        "2026-12-06T11:59:00+01:00",
        "2026-12-06 11:59:00Z",
        "2026-12-06T11:59Z",
    ):
        assert common_time(raw) is None


def test_a_request_gets_the_same_answer_either_way() -> None:
    body = (
        b'{"events": [{"event_id": "a", "type": "t", "occurred_at": "2026-12-06T11:59:00.5Z"},'
        b' {"event_id": "b"}]}'
    )
    parsed = parse_request(body, NOW)
    assert [e.as_dict() for e in parsed.errors] == [
        {"index": 1, "field": "type", "message": "required"},
        {"index": 1, "field": "occurred_at", "message": "required"},
    ]


@settings(max_examples=1500, deadline=None)
@given(
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)),
    st.integers(-1439, 1439),
    st.booleans(),
)
def test_utc_text_is_iso(when: datetime, offset_min: int, whole_second: bool) -> None:
    """to_messages' received_at: utc_text writes exactly what iso writes, whatever the offset."""
    if whole_second:
        when = when.replace(microsecond=0)
    local = when.astimezone(timezone(timedelta(minutes=offset_min)))
    assert utc_text(when) == iso(when)
    assert utc_text(local) == iso(local) == iso(when)


def test_a_parsed_batch_is_the_dataclass_it_replaces() -> None:
    """_valid builds Parsed without its __init__: equal to the one __init__ builds, fields and
    defaults, for one event, several, and an id twice."""
    one = parse_request(orjson.dumps(event(0)), NOW)
    assert one == Parsed(one.events, [], False, list(one.events), [0])
    assert one.errors == [] and one.too_many is False and one.distinct == one.events and one.slots == [0]
    many = parse_request(orjson.dumps({"events": [event(0), event(1), event(0)]}), NOW)
    assert many == Parsed(many.events, [], False, many.events[:2], [0, 1, 0])
    distinct = parse_request(orjson.dumps({"events": [event(0), event(1)]}), NOW)
    assert distinct == Parsed(distinct.events, [], False, list(distinct.events), [0, 1])
    assert distinct.distinct is not distinct.events  # a copy, as before
    with pytest.raises(dataclasses.FrozenInstanceError):
        one.slots = []  # type: ignore[misc]


def event(i: int) -> dict[str, Any]:
    return {"event_id": f"e-{i}", "type": "t", "occurred_at": "2026-12-06T11:59:00Z"}
