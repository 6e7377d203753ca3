"""`opsmantik maintenance add START END --reason TEXT` and `maintenance list [--all]`.

Seed §2.1 excludes scheduled maintenance "communicated 48h in advance": a window is refused
(exit 2, nothing stored) unless it starts at least 48 h from now. The SLA report excludes only
windows whose start is >= 48 h after they were recorded; the status page lists them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from opsmantik.billing.connect import connect
from opsmantik.config import Settings
from opsmantik.errors import Refused
from opsmantik.sla.queries import Q

NOTICE = timedelta(hours=48)


class WindowRefused(Refused, ValueError):
    pass


def parse_instant(raw: str, name: str) -> datetime:
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise WindowRefused(f"{name} {raw!r}: expected RFC 3339, e.g. 2026-12-01T02:00:00Z") from None
    if value.tzinfo is None:
        raise WindowRefused(f"{name} {raw!r}: give an offset (Z or +hh:mm); a bare time is ambiguous")
    return value.astimezone(UTC)


def check_window(start: datetime, end: datetime, now: datetime) -> None:
    if end <= start:
        raise WindowRefused("END must be after START")
    if start - now < NOTICE:
        raise WindowRefused(
            f"a window must be announced >= 48 h ahead: START {start.isoformat()} is "
            f"{(start - now).total_seconds() / 3600:.1f} h from now (earliest "
            f"{(now + NOTICE).isoformat(timespec='seconds')})"
        )


def _window(r: object) -> dict[str, object]:
    d = dict(r)  # type: ignore[call-overload]
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in d.items()}


async def add_window(settings: Settings, start_raw: str, end_raw: str, reason: str) -> dict[str, object]:
    """Record a window, or WindowRefused (nothing stored) before the database is touched if it can."""
    start, end = parse_instant(start_raw, "START"), parse_instant(end_raw, "END")
    check_window(start, end, datetime.now(UTC))
    if not reason.strip():
        raise WindowRefused("--reason must not be empty")
    conn = await connect(settings)
    try:
        # The 48 h are checked against the database's clock too (created_at is its now()).
        async with conn.transaction():
            row = await conn.fetchrow(Q["add_window"], start, end, reason)
            if row["starts_at"] - row["created_at"] < NOTICE:
                raise WindowRefused("a window must be announced >= 48 h ahead (database clock)")
    finally:
        await conn.close()
    return _window(row)


async def list_windows(settings: Settings, every: bool) -> list[dict[str, object]]:
    """Windows ending from now on (`every`: past ones too)."""
    conn = await connect(settings)
    try:
        return [_window(r) for r in await conn.fetch(Q["list_windows"], every)]
    finally:
        await conn.close()
