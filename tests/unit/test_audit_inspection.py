"""The audit's message inspection and accounting (pure): any bytes in, never an exception; which
dead letters are breaches."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st
from opsmantik.audit.auditor import account
from opsmantik.audit.contract import SCHEMA, gateway_problem
from opsmantik.audit.inspection import RawMessage, inspect

from tests.support.pipeline import message

SITE = uuid.UUID("0000000a-0000-4000-8000-00000000000b")
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
TS = int(NOW.timestamp() * 1000)


def raw(value: bytes | None, offset: int = 0, key: bytes | None = str(SITE).encode()) -> RawMessage:
    return RawMessage(1, offset, key, value, TS)


def doc(**changes: object) -> dict[str, object]:
    d = orjson.loads(message(SITE, "e-1", occurred_at=NOW, received_at=NOW))
    d.update(changes)
    return d


def test_a_gateway_message_is_gateway_valid_and_keyed() -> None:
    m = inspect(raw(message(SITE, "e-1", occurred_at=NOW, received_at=NOW)))
    assert m.gateway_problem is None
    assert m.ledger_key == (SITE, "e-1") and m.site == str(SITE) and m.month == date(2026, 11, 1)


def test_escaped_nul_text_is_valid_but_a_real_nul_is_not() -> None:
    # The reproduction 1: backslash-u-0000 as text is an ordinary string.
    assert gateway_problem(doc(properties={"log": "raw \\u0000 escape"})) is None
    assert gateway_problem(doc(properties={"log": "raw \x00 nul"})) == "NUL in properties"


def test_each_schema_rule_at_its_edge() -> None:
    assert gateway_problem(doc(quantity=10**12)) is None
    assert gateway_problem(doc(quantity=10**12 + 1)) == "quantity out of range"
    assert gateway_problem(doc(quantity=0)) == "quantity out of range"
    assert gateway_problem(doc(quantity=True)) == "quantity is not integer"
    assert gateway_problem(doc(v=True)) == "v is not 1"
    assert gateway_problem(doc(type="t" * 64)) is None
    assert gateway_problem(doc(type="t" * 65)) == "type length out of range"
    assert gateway_problem(doc(event_id="a" * 128)) is None
    assert gateway_problem(doc(event_id="a" * 129)) is not None
    assert gateway_problem(doc(event_id="ok\n")) == "event_id does not match its pattern"
    assert gateway_problem(doc(path=["kafka"])) is not None
    assert gateway_problem(doc(gateway_status="maybe")) is not None
    assert gateway_problem(doc(extra=1)) == "unknown fields extra"
    d = doc()
    del d["received_at"]
    assert gateway_problem(d) == "missing received_at"
    assert gateway_problem(doc(site_id=str(SITE).upper())) == "site_id is not a canonical uuid"
    assert gateway_problem(doc(usage_month="2026-10-01")) == "usage_month is not occurred_at's UTC month"
    old = NOW - timedelta(days=35)
    assert gateway_problem(doc(occurred_at=old.isoformat(), usage_month="2026-10-01")) is None
    older = (old - timedelta(seconds=2)).isoformat()
    assert gateway_problem(doc(occurred_at=older, usage_month="2026-10-01")) is not None
    assert gateway_problem(doc(occurred_at="0001-01-01T00:00:00+01:00")) is not None  # overflow
    assert gateway_problem(doc(properties={"k": "x" * (16 * 1024)})) == "properties larger than 16 KiB"


def test_tombstones_garbage_and_odd_keys_are_inspected() -> None:
    tomb = inspect(raw(None, key=None))
    assert (tomb.site, tomb.ledger_key, tomb.gateway_problem) == ("", None, "tombstone")
    junk = inspect(RawMessage(0, 5, b"\xff\x00key", b"\x00\xff not json", None))
    assert junk.site == "\ufffd\\0key" and not junk.gateway_valid
    nul_id = inspect(raw(orjson.dumps(doc(event_id="a\x00b"))))
    assert nul_id.event_id is None and nul_id.ledger_key is None


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(st.none(), st.binary(max_size=200)),
    st.one_of(st.none(), st.binary(max_size=40)),
    st.one_of(st.none(), st.integers(min_value=-(2**63), max_value=2**63 - 1)),
)
def test_any_bytes_are_inspected_without_an_exception(
    value: bytes | None, key: bytes | None, ts: int | None
) -> None:
    inspect(RawMessage(0, 0, key, value, ts))


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from([*SCHEMA["required"], "x"]),  # the contract's own list, not the worker's
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
            lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(), c, max_size=3),
            max_leaves=8,
        ),
    )
)
def test_any_json_object_is_judged_without_an_exception(d: dict[str, object]) -> None:
    gateway_problem({**doc(), **d})


def test_accounting_and_breaches() -> None:
    other = uuid.UUID("00000000-0000-4000-8000-000000000002")
    msgs = [
        inspect(raw(message(SITE, "in-ledger", occurred_at=NOW, received_at=NOW), 0)),
        inspect(raw(message(SITE, "valid-dead", occurred_at=NOW, received_at=NOW), 1)),
        inspect(raw(b"garbage", 2)),
        inspect(raw(orjson.dumps(doc(event_id="bad-qty", quantity=0)), 3)),
        inspect(raw(message(other, "unknown-site", occurred_at=NOW, received_at=NOW), 4)),
        inspect(raw(message(SITE, "lost", occurred_at=NOW, received_at=NOW), 5)),
        inspect(raw(None, 6)),
    ]
    outcomes, findings = account(msgs, {(SITE, "in-ledger")}, {(1, 1), (1, 2), (1, 3), (1, 4)}, {SITE})
    assert outcomes == [
        "ledgered",
        "dead_lettered",
        "dead_lettered",
        "dead_lettered",
        "dead_lettered",
        "unaccounted",
        "unaccounted",
    ]
    assert [(f.kind, f.message.offset) for f in findings] == [
        ("breach", 1),
        ("unaccounted", 5),
        ("unaccounted", 6),
    ]
