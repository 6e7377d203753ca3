"""Decoding ingest messages (services/opsmantik/worker/message.py) and batch ordering (ledger.py)."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st
from opsmantik.events import MAX_QUANTITY, field_errors
from opsmantik.worker.ledger import dedupe_in_order
from opsmantik.worker.message import DeadLetter, IngestEvent, _fields_pass, decode

SITE = uuid.UUID(int=7)


def doc(**over: object) -> bytes:
    base: dict[str, object] = {
        "v": 1,
        "site_id": str(SITE),
        "event_id": "e-1",
        "type": "api_call",
        "occurred_at": "2026-11-27T10:00:00.000000+00:00",
        "usage_month": "2026-11-01",
        "quantity": 3,
        "properties": {"k": "v"},
        "received_at": "2026-11-27T10:00:01.000000+00:00",
        "path": "kafka",
        "gateway_status": "accepted",
    }
    base.update(over)
    return orjson.dumps({k: v for k, v in base.items() if v is not ...})


def test_decodes_a_valid_message() -> None:
    ev = decode(doc(), 2, 40)
    assert isinstance(ev, IngestEvent)
    assert (ev.site_id, ev.event_id, ev.quantity, ev.partition, ev.offset) == (SITE, "e-1", 3, 2, 40)
    assert ev.usage_month == date(2026, 11, 1)
    assert ev.received_at == datetime(2026, 11, 27, 10, 0, 1, tzinfo=UTC)
    assert orjson.loads(ev.properties or "null") == {"k": "v"}


def test_offset_times_are_normalised_to_utc() -> None:
    ev = decode(
        doc(occurred_at="2026-12-01T00:30:00+02:00", received_at="2026-11-30T22:30:01.000000+00:00"), 0, 0
    )
    assert isinstance(ev, IngestEvent) and ev.occurred_at.hour == 22


def test_occurred_at_within_the_gateways_window_of_received_at() -> None:
    """The gateway's rule (35 days before, 5 minutes after its clock, the audit's 1 s slack) at
    each edge; received_at from 1970 to 9999-11-01. Outside: a dead letter, never a batch that
    fails (a date in January of year 1 reached Postgres as -infinity and failed every retry)."""
    received = datetime(2026, 11, 27, 10, 0, 1, tzinfo=UTC)

    def at(t: datetime, r: datetime = received) -> bytes:
        return doc(
            occurred_at=t.isoformat(timespec="microseconds"),
            usage_month=t.date().replace(day=1).isoformat(),
            received_at=r.isoformat(timespec="microseconds"),
        )

    earliest = received - timedelta(days=35, seconds=1)
    latest = received + timedelta(minutes=5, seconds=1)
    for ok in (earliest, received, latest):
        assert isinstance(decode(at(ok), 0, 0), IngestEvent), ok
    window = "occurred_at is not within 35 days before and 5 minutes after received_at"
    for bad in (earliest - timedelta(microseconds=1), latest + timedelta(microseconds=1)):
        assert reason(at(bad)) == window, bad
    year_one = datetime(1, 1, 1, 12, tzinfo=UTC)
    assert reason(at(year_one)) == window
    clock = "received_at is not between 1970-01-01 and 9999-11-01"
    assert reason(at(year_one, year_one)) == clock
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    assert isinstance(decode(at(epoch - timedelta(days=35), epoch), 0, 0), IngestEvent)
    assert reason(at(epoch, epoch - timedelta(microseconds=1))) == clock
    end = datetime(9999, 11, 1, tzinfo=UTC)
    assert isinstance(decode(at(end, end - timedelta(microseconds=1)), 0, 0), IngestEvent)
    assert reason(at(end, end)) == clock
    assert (
        reason(at(datetime(9999, 12, 31, 23, 59, tzinfo=UTC), datetime(9999, 12, 31, 23, 58, tzinfo=UTC)))
        == clock
    )


def reason(value: bytes | None) -> str:
    dead = decode(value, 0, 0)
    assert isinstance(dead, DeadLetter)
    return dead.reason


def test_bad_messages_become_dead_letters_with_a_reason() -> None:
    assert reason(None) == "not JSON"
    assert reason(b"[1]") == "not a JSON object"
    assert reason(doc(quantity=...)) == "missing quantity"
    assert reason(doc(extra=1)) == "unknown fields extra"
    assert reason(doc(v=2)) == "unsupported v=2"
    assert reason(doc(event_id="a b")).startswith("event_id: must be 1-128 characters")
    assert reason(doc(type="t\x00")).startswith("type: must be a string")
    assert reason(doc(quantity=True)).startswith("quantity: must be an integer")
    assert reason(doc(quantity=0)).startswith("quantity: must be an integer")
    assert reason(doc(path="smtp")) == "bad path"
    assert reason(doc(properties=[1])) == "properties: must be an object or null"
    assert reason(doc(properties={"a": "\x00"})) == "properties: strings must not contain NUL (\\u0000)"
    assert reason(doc(site_id="nope")).startswith("bad site_id")
    assert reason(doc(occurred_at="2026-11-27T10:00:00")).startswith("occurred_at or received_at")
    assert reason(doc(usage_month="2026-10-01")) == "usage_month is not occurred_at's UTC month"


def test_dead_letter_text_columns_never_carry_nul() -> None:
    dead = decode(doc(event_id="x\x00y"), 0, 0)
    assert isinstance(dead, DeadLetter) and dead.event_id is not None and "\x00" not in dead.event_id
    assert dead.payload == doc(event_id="x\x00y")


def test_dedupe_keeps_the_first_copy_in_ledger_order() -> None:
    late = decode(doc(quantity=9), 1, 5)
    early = decode(doc(quantity=1), 0, 9)
    other = decode(doc(event_id="e-2"), 0, 3)
    assert isinstance(late, IngestEvent) and isinstance(early, IngestEvent) and isinstance(other, IngestEvent)
    assert dedupe_in_order([late, early, other]) == [other, early]


def test_the_worker_ledgers_what_the_gateway_accepts_field_for_field() -> None:
    """Issue 9, reproduction 1: an escaped backslash followed by u0000 is text, not a NUL."""
    props = {"log": "raw \\u0000 escape", "k\u2028": ["\u2029", -0.0, 2**64 - 1, {"$where": "a.b"}]}
    ev = decode(doc(properties=props), 0, 0)
    assert isinstance(ev, IngestEvent), ev
    assert orjson.loads(ev.properties or "null") == props


def test_any_input_gives_a_record_never_an_exception() -> None:
    """Issue 9, reproduction 2: wrong types where strings belong used to raise (TypeError,
    OverflowError) out of decode and crash the agent."""
    hostile = [
        doc(path=["kafka"]),
        doc(gateway_status={"a": 1}),
        doc(v=True),
        doc(v=1.0),
        doc(occurred_at="0001-01-01T00:00:00+01:00"),
        doc(received_at="9999-12-31T23:59:59-01:00"),
        doc(site_id=7),
        doc(usage_month=None),
        doc(**{"bad\x00name": 1}),
        doc(type=["t"]),
        orjson.dumps({"v": 1}) + b"\xff",
        b"\x00" * 10,
        b"[" * 5000 + b"]" * 5000,
        b'"\\ud800"',
    ]
    for raw in hostile:
        dead = decode(raw, 3, 9)
        assert isinstance(dead, DeadLetter), raw[:80]
        for text in (dead.reason, dead.site_id, dead.event_id):
            assert text is None or ("\x00" not in text and text.encode("utf-8"))


_OTHER = st.one_of(  # of no field's type, or of the wrong one
    st.none(),
    st.booleans(),
    st.floats(allow_nan=False),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.integers(),
    st.text(max_size=3),
)
_EVENT_IDS = st.one_of(
    st.from_regex(r"[A-Za-z0-9._:-]{1,128}", fullmatch=True),
    st.from_regex(r"ce~[0-9a-f]{64}", fullmatch=True),
    st.sampled_from(["", "a" * 129, "ce~" + "0" * 63, "ce~" + "A" * 64, "a b", "e\x00", "é", "e-1\n", "ce~"]),
    st.text(max_size=130),
    _OTHER,
)
_TYPES = st.one_of(
    st.text(min_size=1, max_size=64).filter(lambda t: "\x00" not in t),
    st.sampled_from(["", "t" * 65, "\x00", "a\x00b", "t" * 64]),
    st.text(max_size=70),
    _OTHER,
)
_QUANTITIES = st.one_of(
    st.integers(min_value=1, max_value=MAX_QUANTITY),
    st.sampled_from([0, -1, MAX_QUANTITY + 1, 2**64, True, 1.0, 5.5]),
    _OTHER,
)
_SUBJECTS = st.one_of(
    st.none(),
    st.text(min_size=1, max_size=256).filter(lambda t: "\x00" not in t),
    st.sampled_from(["", "s" * 257, "s\x00", "s" * 256]),
    _OTHER,
)


@settings(max_examples=3000, deadline=None)
@given(event_id=_EVENT_IDS, kind=_TYPES, quantity=_QUANTITIES, subject=_SUBJECTS)
def test_the_fields_fast_check_accepts_exactly_what_field_errors_accepts(
    event_id: object, kind: object, quantity: object, subject: object
) -> None:
    """message._fields_pass (the decode's one-expression check) is True exactly where
    events.field_errors (the gateway's rules, naming every error) finds nothing."""
    d = {"event_id": event_id, "type": kind, "quantity": quantity, "subject": subject}
    assert _fields_pass(d) == (field_errors(d) == [])
    without_subject = {"event_id": event_id, "type": kind, "quantity": quantity}
    assert _fields_pass(without_subject) == (field_errors(without_subject) == [])


def test_the_fields_fast_check_accepts_the_gateway_shapes() -> None:
    for event_id in ("e-1", "A.b:c_d-9", "ce~" + "ab" * 32, "x" * 128):
        for subject in (None, "cust-1", "s" * 256):
            d = {"event_id": event_id, "type": "api_call", "quantity": 1, "subject": subject}
            assert _fields_pass(d) and field_errors(d) == []
