"""The one month type and its parser. A month is the `date` of its first day (what the ledger's
usage_month and the invoice's month columns hold); `YYYY-MM` → that date, or MonthError (a
ValueError). Every route, command and report takes and computes months here.

Every route and command that takes a month uses it, so `0000-01`, `2026-13`, `2026-1` and
` 2026-01` are refused the same way everywhere (HTTP 400, exit 2), never a 5xx: year 0 once made
`/api/usage` answer 503 "retrying is safe", so a client would retry forever. Years 0001-9999
(everything `date` can hold); schemas/openapi.yaml carries the same PATTERN (a unit
test compares).
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime

from opsmantik.errors import UsageError

# ASCII digits only (\d would also match ２); year 0000 does not exist.
PATTERN = r"^([1-9][0-9]{3}|0[1-9][0-9]{2}|00[1-9][0-9]|000[1-9])-(0[1-9]|1[0-2])$"
_MONTH = re.compile(PATTERN)
EXPECTED = "expected YYYY-MM (year 0001-9999, month 01-12)"


class MonthError(UsageError, ValueError):
    """A string that is not a month; the message says what was expected."""


def parse_month(raw: str | None) -> date:
    if raw is None or not _MONTH.fullmatch(raw):
        raise MonthError(f"month {raw!r}: {EXPECTED}")
    return date(int(raw[:4]), int(raw[5:7]), 1)


Month = date  # the first day of the month


def month_of(instant: datetime) -> date:
    """The month an instant (in UTC) falls in."""
    return instant.astimezone(UTC).date().replace(day=1)


def next_month(month: date) -> date:
    return date(month.year + 1, 1, 1) if month.month == 12 else date(month.year, month.month + 1, 1)


def previous_month(month: date) -> date:
    return date(month.year - 1, 12, 1) if month.month == 1 else date(month.year, month.month - 1, 1)


def months_before(month: date, n: int) -> date:
    """`n` months before `month`, or 0001-01 when that would be before the calendar starts."""
    index = max(0, month.year * 12 + month.month - 1 - n - 12)  # months since 0001-01
    return date(index // 12 + 1, index % 12 + 1, 1)


def month_start(month: date) -> datetime:
    return datetime(month.year, month.month, 1, tzinfo=UTC)


def month_end(month: date) -> datetime:
    """The instant the month ends (exclusive). December 9999 ends at datetime.max."""
    if month.year == 9999 and month.month == 12:
        return datetime.max.replace(tzinfo=UTC)
    return month_start(next_month(month))


def month_bounds(month: date) -> tuple[datetime, datetime]:
    """[start, end) of the month in UTC."""
    return month_start(month), month_end(month)


def label(month: date) -> str:
    return f"{month.year:04d}-{month.month:02d}"
