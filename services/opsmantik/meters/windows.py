"""Query windows in an IANA time zone: MINUTE, HOUR, DAY, MONTH (docs/meters.md "Windows").

A window boundary is an instant whose local time in the zone is a whole minute, hour, day or
month. Local days are 23, 24 or 25 hours long around daylight-saving changes; a day whose
midnight does not exist (a change at midnight) starts at its first local instant. Every modern
offset is a whole number of minutes, and HOUR boundaries fall on a UTC quarter hour (offsets such
as +05:45 or Lord_Howe's +10:30), so every window is a union of the one-minute buckets. A query
reads each window as its coarsest UTC-aligned pieces (meters/rollup.py pieces): the minutes up to
the first UTC hour, the hour rollups up to the first UTC day, the day rollups, then hours and minutes.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from opsmantik.months import next_month

SIZES = ("MINUTE", "HOUR", "DAY", "MONTH")
_Q = timedelta(minutes=15)


def _local_start(day: date, zone: ZoneInfo) -> datetime:
    """The first instant of a local date (fold=0 maps a skipped midnight to the instant after the
    gap, which is the day's first instant)."""
    return datetime.combine(day, time(0), zone).astimezone(UTC)


def floor(t: datetime, size: str, zone: ZoneInfo) -> datetime:
    """The boundary at or before t."""
    t = t.astimezone(UTC)
    if size == "MINUTE":
        return t.replace(second=0, microsecond=0)
    if size == "HOUR":
        b = t.replace(minute=t.minute - t.minute % 15, second=0, microsecond=0)
        while b.astimezone(zone).minute != 0:
            b -= _Q
        return b
    local = t.astimezone(zone).date()
    if size == "MONTH":
        local = local.replace(day=1)
    return _local_start(local, zone)


def next_boundary(b: datetime, size: str, zone: ZoneInfo) -> datetime:
    if size == "MINUTE":
        return b + timedelta(minutes=1)
    if size == "HOUR":
        n = b + _Q
        while n.astimezone(zone).minute != 0:
            n += _Q
        return n
    local = b.astimezone(zone).date()
    nxt = local + timedelta(days=1) if size == "DAY" else next_month(local)
    return _local_start(nxt, zone)


def windows(
    start: datetime, end: datetime, size: str, zone: ZoneInfo, cap: int
) -> list[tuple[datetime, datetime]] | None:
    """The windows covering [start, end) (start a boundary); None when more than `cap`."""
    out: list[tuple[datetime, datetime]] = []
    b = start
    while b < end:
        if len(out) == cap:
            return None
        n = next_boundary(b, size, zone)
        out.append((b, n))
        b = n
    return out
