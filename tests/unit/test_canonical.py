"""canonical.py's fast paths (exact str and int through the C escaper and int's repr; one shared
decoder) give the same bytes and the same parse as the json.dumps / json.loads forms they replace,
on any JSON value: the digest of every statement and export depends on it."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opsmantik.billing import canonical


def reference_value(v: Any) -> str:
    """The encoding before the fast paths (canonical._value as it was)."""
    if isinstance(v, dict):
        return "{" + ",".join(reference_value(k) + ":" + reference_value(v[k]) for k in sorted(v)) + "}"
    if isinstance(v, list):
        return "[" + ",".join(reference_value(x) for x in v) + "]"
    if isinstance(v, Decimal):
        return format(v, "f")
    return json.dumps(v, ensure_ascii=False)


def reference_loads(text: str | bytes) -> Any:
    return json.loads(text, parse_float=Decimal)


TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=12)  # lone surrogates too
SCALARS = (
    TEXT
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.booleans()
    | st.none()
    | st.decimals(allow_nan=False, allow_infinity=False)
)
JSON = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4)
)


@settings(max_examples=200, deadline=None)
@given(JSON)
def test_the_encoding_is_the_json_dumps_one(value: Any) -> None:
    assert canonical._value(value) == reference_value(value)


@settings(max_examples=150, deadline=None)
@given(JSON)
def test_loads_parses_as_json_loads(value: Any) -> None:
    text = reference_value(value)
    for form in (text, "\ufeff" + text, text.encode("utf-8", "surrogatepass")):
        try:
            expected: Any = reference_loads(form)
        except ValueError as exc:
            with pytest.raises(ValueError) as got:
                canonical.loads(form)
            assert str(got.value) == str(exc)
        else:
            assert canonical.loads(form) == expected


def test_subclasses_keep_the_json_dumps_form() -> None:
    class Flag(int):
        pass

    class Name(str):
        pass

    assert canonical._value({"a": [True, None, Flag(3), Name("é\n")]}) == '{"a":[true,null,3,"é\\n"]}'
