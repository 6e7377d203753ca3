"""Billing months (`YYYY-MM`): the one parser, shared by the gateway's ?month=, the CLI's --month
and every report, so all of them accept and refuse the same strings.

Years 2000-2999 only: no ledger row can be older than the project (events are at most 35 days
old), and the bound keeps every month's exclusive end (`next_month`) representable, where
`date(0, 1, 1)` and `date(10000, 1, 1)` raise. schemas/openapi.yaml carries the same PATTERN.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime

PATTERN = r"^2[0-9]{3}-(0[1-9]|1[0-2])$"
_MONTH = re.compile(PATTERN)
EXPECTED = "expected YYYY-MM with a year from 2000 to 2999"


class MonthError(ValueError):
    """A string that is not a billing month; the message says what was expected."""


def parse_month(raw: str | None) -> date:
    """'2026-05' → date(2026, 5, 1); anything else raises MonthError."""
    if raw is None or not _MONTH.fullmatch(raw):
        shown = "nothing" if raw is None else repr(raw[:20])
        raise MonthError(f"{EXPECTED}, got {shown}")
    return date(int(raw[:4]), int(raw[5:7]), 1)


def format_month(month: date) -> str:
    return f"{month:%Y-%m}"


def next_month(month: date) -> date:
    return date(month.year + 1, 1, 1) if month.month == 12 else date(month.year, month.month + 1, 1)


def previous_month(month: date) -> date:
    return date(month.year - 1, 12, 1) if month.month == 1 else date(month.year, month.month - 1, 1)


def month_bounds(month: date) -> tuple[datetime, datetime]:
    """[start, end) of the month in UTC."""
    start = datetime(month.year, month.month, 1, tzinfo=UTC)
    end = next_month(month)
    return start, datetime(end.year, end.month, 1, tzinfo=UTC)
