"""meters/rollup.py pieces: a query window as minute, hour and day pieces (docs/meters.md "Tiers").

Property (random windows over years, whole minutes, and the windows of every size in zones with
whole-hour, half-hour and 45-minute offsets across their DST changes): the pieces cover the window
exactly, in order, without overlap; an hour piece lies on UTC hours, a day piece on UTC days; and
they are the coarsest: no minute piece holds a whole UTC hour, no hour piece a whole UTC day."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from opsmantik.meters import rollup, windows

HOUR, DAY = timedelta(hours=1), timedelta(days=1)


def check(start: datetime, end: datetime) -> set[int]:
    ps = rollup.pieces(start, end)
    assert ps[0][1] == start and ps[-1][2] == end
    for (_, _, b), (_, a, _) in zip(ps, ps[1:], strict=False):
        assert a == b  # contiguous: no gap, no overlap
    for width, a, b in ps:
        assert a < b
        if width == 0:
            assert rollup.ceil(a, HOUR) + HOUR > b  # no whole UTC hour inside
        else:
            step = rollup.WIDTHS[width]
            assert rollup.floor(a, step) == a and rollup.floor(b, step) == b
            if width == 60:
                assert rollup.ceil(a, DAY) + DAY > b  # no whole day inside
    widths = [w for w, _, _ in ps]
    top = widths.index(max(widths))  # minutes, hours, days, hours, minutes: up, then down
    assert len(ps) <= 5 and widths[: top + 1] == sorted(widths[: top + 1])
    assert widths[top:] == sorted(widths[top:], reverse=True)
    return set(widths)


def test_random_windows_are_covered_by_their_coarsest_pieces() -> None:
    rng = random.Random(2026_2617)
    seen: set[int] = set()
    t0 = datetime(2019, 1, 1, tzinfo=UTC)
    for _ in range(20_000):
        start = t0 + timedelta(minutes=rng.randint(0, 4 * 365 * 1440))
        span = rng.choice([1, 15, 59, 61, 1439, 1441, 3 * 1440 + 7, 40 * 1440 + 13])
        end = start + timedelta(minutes=rng.randint(1, span))
        seen |= check(start, end)
    assert seen == {0, 60, 1440}


def test_every_window_size_in_odd_zones_across_dst() -> None:
    seen: dict[str, set[int]] = {}
    for zone in ("UTC", "America/New_York", "Australia/Lord_Howe", "Asia/Kathmandu", "Asia/Kolkata"):
        z = ZoneInfo(zone)
        for size, span in (("MINUTE", 3), ("HOUR", 4), ("DAY", 40), ("MONTH", 400)):
            for center in (datetime(2024, 3, 10, 7, tzinfo=UTC), datetime(2024, 4, 6, 15, tzinfo=UTC)):
                start = windows.floor(center - timedelta(days=span / 2), size, z)
                end = windows.floor(center + timedelta(days=span / 2), size, z)
                for ws, we in windows.windows(start, end, size, z, 100_000) or []:
                    seen.setdefault(zone, set()).update(check(ws, we))
    assert all(s == {0, 60, 1440} for s in seen.values()), seen
