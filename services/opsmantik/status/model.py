"""What the status page shows, as data: the snapshot the refresher builds and page.py and
summary.py render (no I/O here)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from opsmantik.status import figures
from opsmantik.status.components import COMPONENT_IDS, INDICATOR_WORDS, ComponentState

BAR_DAYS = 90


@dataclass(frozen=True)
class DayBar:
    day: date
    checks: int
    uptime: float | None  # None: no checks that day ("No data")
    worst: str  # the worst state seen that day (the bar's colour)

    @property
    def title(self) -> str:
        if self.uptime is None:
            return f"{self.day:%d %b %Y}: no data"
        return f"{self.day:%d %b %Y}: {figures.pct(self.uptime, 2)} uptime ({self.checks:,} checks)"


@dataclass(frozen=True)
class IncidentUpdate:
    id: int
    status: str
    body: str
    created_at: datetime


@dataclass(frozen=True)
class Incident:
    id: int
    name: str
    impact: str
    status: str
    components: list[str]
    created_at: datetime
    updated_at: datetime
    resolved_at: datetime | None
    updates: list[IncidentUpdate]


@dataclass(frozen=True)
class Maintenance:
    id: int
    reason: str
    starts_at: datetime
    ends_at: datetime
    created_at: datetime

    def status(self, now: datetime) -> str:
        return "scheduled" if now < self.starts_at else "in_progress" if now < self.ends_at else "completed"


@dataclass(frozen=True)
class Snapshot:
    updated_at: datetime
    indicator: str
    components: list[ComponentState]
    bars: dict[str, list[DayBar]]
    month: str
    slo: list[figures.SloFigure]
    incidents: list[Incident]  # newest first, unresolved and recently resolved
    maintenances: list[Maintenance]
    figures_at: datetime | None  # when the month figures were read (None: never)
    db_reachable: bool

    @property
    def description(self) -> str:
        return INDICATOR_WORDS[self.indicator]

    @property
    def active_incidents(self) -> list[Incident]:
        return [i for i in self.incidents if i.resolved_at is None]

    @property
    def past_incidents(self) -> list[Incident]:
        return [i for i in self.incidents if i.resolved_at is not None]

    def uptime_90d(self, component: str) -> float | None:
        weighted = [(b.uptime, b.checks) for b in self.bars.get(component, []) if b.uptime is not None]
        checks = sum(c for _, c in weighted)
        return None if not checks else sum(u * c for u, c in weighted) / checks


def empty_bars(today: date) -> list[DayBar]:
    return [DayBar(today - timedelta(days=BAR_DAYS - 1 - i), 0, None, "none") for i in range(BAR_DAYS)]


def build_bars(rows: list[Any], today: date) -> dict[str, list[DayBar]]:
    """90 bars per component, oldest first; a day without rows is "no data"."""
    by = {(r["component"], r["day"]): r for r in rows}
    out: dict[str, list[DayBar]] = {}
    for c in COMPONENT_IDS:
        bars = []
        for blank in empty_bars(today):
            r = by.get((c, blank.day))
            if r is None or not r["checks"]:
                bars.append(blank)
                continue
            down = r["partial"] + r["major"]
            worst = (
                "major_outage"
                if r["major"]
                else "partial_outage"
                if r["partial"]
                else "degraded_performance"
                if r["degraded"]
                else "under_maintenance"
                if r["maintenance"]
                else "operational"
            )
            bars.append(DayBar(blank.day, r["checks"], 1 - down / r["checks"], worst))
        out[c] = bars
    return out
