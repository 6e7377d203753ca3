"""The one month parser: `YYYY-MM` → the first day of that month, or ValueError.

Every route and command that takes a month uses it, so `0000-01`, `2026-13`, `2026-1` and
` 2026-01` are refused the same way everywhere (HTTP 400, exit 2), never a 5xx.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime

_MONTH = re.compile(r"([0-9]{4})-(0[1-9]|1[0-2])")  # ASCII digits only: \\d also matches ２


def parse_month(raw: str | None) -> date:
    match = _MONTH.fullmatch(raw or "")
    if match is None or int(match[1]) < 1:  # year 0000 does not exist (date() would raise)
        raise ValueError(f"month {raw!r}: expected YYYY-MM (year 0001-9999, month 01-12)")
    return date(int(match[1]), int(match[2]), 1)


def next_month(month: date) -> date:
    return date(month.year + 1, 1, 1) if month.month == 12 else date(month.year, month.month + 1, 1)


def previous_month(month: date) -> date:
    return date(month.year - 1, 12, 1) if month.month == 1 else date(month.year, month.month - 1, 1)


def month_start(month: date) -> datetime:
    return datetime(month.year, month.month, 1, tzinfo=UTC)


def month_end(month: date) -> datetime:
    """The instant the month ends (exclusive). December 9999 ends at datetime.max."""
    if month.year == 9999 and month.month == 12:
        return datetime.max.replace(tzinfo=UTC)
    return month_start(next_month(month))


def label(month: date) -> str:
    return f"{month.year:04d}-{month.month:02d}"
