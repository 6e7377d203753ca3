"""services/opsmantik/months.py: the one month parser, at its edges, and the OpenAPI document agrees with
it."""

import re
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from opsmantik.months import (
    PATTERN,
    MonthError,
    month_bounds,
    months_before,
    next_month,
    parse_month,
    previous_month,
)

OPENAPI = Path(__file__).resolve().parents[2] / "schemas/openapi.yaml"


def test_valid_months_at_the_edges() -> None:
    assert parse_month("0001-01") == date(1, 1, 1)
    assert parse_month("9999-12") == date(9999, 12, 1)
    assert parse_month("2026-05") == date(2026, 5, 1)
    assert parse_month("0010-01") == date(10, 1, 1) and parse_month("0100-01") == date(100, 1, 1)


@pytest.mark.parametrize(
    "raw",
    [
        None,
        "",
        "0000-01",
        "10000-01",
        "-001-01",
        "2026-00",
        "2026-13",
        "2026-1",
        "26-01",
        "2026-01-01",
        " 2026-01",
        "2026-01\n",
        "２０２６-01",
        "2026/01",
    ],
)
def test_everything_else_is_refused_with_what_was_expected(raw: str | None) -> None:
    with pytest.raises(MonthError, match="YYYY-MM"):
        parse_month(raw)


def test_neighbours_and_bounds() -> None:
    assert next_month(date(2026, 12, 1)) == date(2027, 1, 1)
    assert previous_month(date(2026, 1, 1)) == date(2025, 12, 1)
    assert month_bounds(date(2026, 12, 1)) == (
        datetime(2026, 12, 1, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
    )
    assert month_bounds(date(9999, 12, 1))[1] == datetime.max.replace(tzinfo=UTC)  # still representable


def test_openapi_month_parameter_uses_the_same_pattern() -> None:
    patterns = re.findall(r'pattern: "([^"]*)"', OPENAPI.read_text())
    month_like = [p for p in patterns if "(0[1-9]|1[0-2])" in p]
    assert month_like == [PATTERN]


def test_months_before_stops_at_the_calendars_start() -> None:
    assert months_before(date(2026, 3, 1), 2) == date(2026, 1, 1)
    assert months_before(date(2026, 1, 1), 2) == date(2025, 11, 1)
    assert months_before(date(2026, 1, 1), 0) == date(2026, 1, 1)
    assert months_before(date(1, 2, 1), 2) == date(1, 1, 1)
    assert months_before(date(1, 1, 1), 2) == date(1, 1, 1)
