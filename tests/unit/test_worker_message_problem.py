"""message._problem (the envelope's checks, issue 35: one set check for the field names, `in` for
path and gateway_status, one expression for the four strings) against the checks written out one
by one (the reference below: _problem as it was), on random docs: any subset of the fields, unknown
ones, and a value of any JSON type in each."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from opsmantik.events import field_errors
from opsmantik.worker import message
from opsmantik.worker.message import (
    _ALLOWED,
    _PATHS,
    _REQUIRED,
    _REQUIRED_SET,
    _STATUSES,
    _fields_pass,
    _properties,
)


def reference(doc: dict[str, Any]) -> tuple[str | None, bytes | None]:
    keys = doc.keys()
    if not keys >= _REQUIRED_SET:
        return f"missing {', '.join(k for k in _REQUIRED if k not in doc)}", None
    if not keys <= _ALLOWED:
        return f"unknown fields {', '.join(sorted(set(doc) - _ALLOWED))}", None
    v = doc["v"]
    if type(v) is not int or v != 1:
        return f"unsupported v={v!r}", None
    props = doc.pop("properties", None)
    errors = [] if _fields_pass(doc) else field_errors(doc)
    encoded = None
    if props is not None:
        doc["properties"] = props
        problem, encoded = _properties(props)
        if problem:
            errors.append(("properties", problem))
    if errors:
        return "; ".join(f"{f}: {m}" for f, m in errors), None
    if not isinstance(doc["path"], str) or doc["path"] not in _PATHS:
        return "bad path", None
    if not isinstance(doc["gateway_status"], str) or doc["gateway_status"] not in _STATUSES:
        return "bad gateway_status", None
    for name in ("site_id", "occurred_at", "received_at", "usage_month"):
        if not isinstance(doc[name], str):
            return f"{name} is not a string", None
    return None, encoded


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=4),
    lambda kids: st.lists(kids, max_size=2) | st.dictionaries(st.text(max_size=3), kids, max_size=2),
    max_leaves=4,
)
GOOD: dict[str, Any] = {
    "v": 1,
    "site_id": "0b8e1d7e-3f0a-4c4b-9a57-5d0c6f3c2a11",
    "event_id": "e-1",
    "type": "page_view",
    "occurred_at": "2026-12-07T08:00:00.000000+00:00",
    "usage_month": "2026-12-01",
    "quantity": 1,
    "received_at": "2026-12-07T08:00:01.000000+00:00",
    "path": "kafka",
    "gateway_status": "accepted",
    "properties": {"a": 1},
    "subject": "cust-1",
}
_VALUES = {
    "v": st.sampled_from([1, 2, True, 1.0, "1", None]),
    "path": st.sampled_from([*_PATHS, "smtp", ["kafka"], None, 1]),
    "gateway_status": st.sampled_from([*_STATUSES, "lost", {"a": 1}, True]),
    "properties": st.one_of(st.none(), st.dictionaries(st.text(max_size=3), _JSON, max_size=3), _JSON),
    "subject": st.one_of(st.none(), st.text(max_size=3), _JSON),
}


@st.composite
def docs(draw: st.DrawFn) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for name, good in GOOD.items():
        presence = draw(st.sampled_from(["good", "good", "good", "other", "absent"]))
        if presence == "good":
            doc[name] = good
        elif presence == "other":
            doc[name] = draw(_VALUES.get(name, _JSON))
    for extra in draw(st.lists(st.sampled_from(["extra", "V", "site"]), max_size=2, unique=True)):
        doc[extra] = 0
    return doc


@settings(max_examples=4000, deadline=None)
@given(doc=docs())
def test_problem_says_what_the_checks_one_by_one_say(doc: dict[str, Any]) -> None:
    assert outcome(message._problem, doc) == outcome(reference, doc)


def outcome(check: Callable[[dict[str, Any]], object], doc: dict[str, Any]) -> object:
    """What `check` returns, or the exception it raises (orjson refuses an integer beyond 64 bits:
    decode dead-letters the message either way)."""
    try:
        return check(dict(doc))
    except Exception as exc:
        return repr(exc)


def test_the_gateway_shape_passes() -> None:
    problem, encoded = message._problem(dict(GOOD))
    assert problem is None and encoded == b'{"a":1}'
    without = {k: v for k, v in GOOD.items() if k not in ("properties", "subject")}
    assert message._problem(without) == (None, None)
