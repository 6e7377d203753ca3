"""`opsmantik sla-report --month YYYY-MM [--site S] [--json]`: per site, from the gateway's
per-site rollup (sla_requests), the maintenance windows and the data-loss seam (loss.py):

- §2.1 ingestion reliability and its exclusions (credit.py);
- §1 uptime of /api/sync: 1 - 5xx / requests of the site (4xx and 429 are not errors; no exclusions);
- data loss (loss.py) and the §3 credit tier, decided on §2.1 reliability and data loss.
Exit 0: no site is owed a credit; 1: some site is; 2: bad arguments; 3: Postgres unreachable.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass
from datetime import date
from typing import Any

import asyncpg

from opsmantik.billing.connect import connect
from opsmantik.config import Settings
from opsmantik.months import label, month_end, month_start
from opsmantik.sla.credit import Reliability, credit_percent, credit_reason
from opsmantik.sla.loss import LossReport, data_loss
from opsmantik.sla.queries import Q

_COUNTS = ("received", "persisted", "errors_5xx", "errors_503", "rate_limited", "quota_exceeded", "invalid")


@dataclass(frozen=True)
class SiteSla:
    site_id: uuid.UUID
    name: str | None
    received: int
    persisted: int
    errors_5xx: int
    errors_503: int
    rate_limited: int
    quota_exceeded: int
    invalid: int
    in_maintenance: int  # requests inside announced windows (excluded from §2.1)
    eligible: int
    eligible_persisted: int
    lost_events: int

    @property
    def reliability(self) -> Reliability:
        return Reliability(self.eligible_persisted, self.eligible)

    @property
    def uptime(self) -> float:
        return 1.0 if self.received == 0 else 1 - self.errors_5xx / self.received

    @property
    def credit_percent(self) -> int:
        return credit_percent(self.reliability, self.lost_events)

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "site_id": str(self.site_id),
            "reliability": float(self.reliability.ratio),
            "uptime": self.uptime,
            "credit_percent": self.credit_percent,
            "credit_reason": credit_reason(self.reliability, self.lost_events),
        }


def site_sla(r: dict[str, Any], name: str | None, lost: int) -> SiteSla:
    outside = {
        k: r[k] - r.get(f"m_{k}", 0)
        for k in ("received", "persisted", "rate_limited", "quota_exceeded", "invalid")
    }
    eligible = outside["received"] - outside["rate_limited"] - outside["quota_exceeded"] - outside["invalid"]
    return SiteSla(
        r["site_id"],
        name,
        received=r["received"],
        persisted=r["persisted"],
        errors_5xx=r["errors_5xx"],
        errors_503=r["errors_503"],
        rate_limited=r["rate_limited"],
        quota_exceeded=r["quota_exceeded"],
        invalid=r["invalid"],
        in_maintenance=r.get("m_received", 0),
        eligible=eligible,
        eligible_persisted=outside["persisted"],
        lost_events=lost,
    )


async def report(
    conn: asyncpg.Connection, month: date, site: uuid.UUID | None, settings: Settings
) -> tuple[list[SiteSla], LossReport, list[dict[str, Any]]]:
    start, end = month_start(month), month_end(month)
    rows = {r["site_id"]: dict(r) for r in await conn.fetch(Q["site_rollup"], start, end, site)}
    loss = await data_loss(conn, month, settings)
    for s in loss.lost:
        try:
            sid = uuid.UUID(s)
        except ValueError:
            continue  # ALL_SITES: applies to the sites reported
        if (site is None or sid == site) and sid not in rows:
            rows[sid] = {"site_id": sid}
    if site is not None and site not in rows:
        rows[site] = {"site_id": site}
    for r in rows.values():
        for k in _COUNTS:
            r.setdefault(k, 0)
    names = {r["site_id"]: r["name"] for r in await conn.fetch(Q["site_names"], list(rows))}
    sites = [site_sla(r, names.get(sid), loss.for_site(sid)) for sid, r in sorted(rows.items())]
    windows = [
        {**dict(w), **{k: w[k].isoformat() for k in ("starts_at", "ends_at", "created_at")}}
        for w in await conn.fetch(Q["windows_in"], start, end)
    ]
    return sites, loss, windows


def render(month: date, sites: list[SiteSla], loss: LossReport, windows: list[dict[str, Any]]) -> str:
    lines = [
        f"SLA report {label(month)}: {len(sites)} site(s); maintenance windows excluded: "
        f"{sum(1 for w in windows if w['announced'])} (of {len(windows)})"
    ]
    lines.append(
        f"{'site_id':36}  {'name':14} {'eligible':>9} {'persisted':>9} {'§2.1 rel.':>10} "
        f"{'§1 uptime':>10} {'lost':>5} credit"
    )
    for s in sites:
        lines.append(
            f"{s.site_id}  {(s.name or '?')[:14]:14} {s.eligible:>9} {s.eligible_persisted:>9} "
            f"{float(s.reliability.ratio):>10.4%} {s.uptime:>10.4%} {s.lost_events:>5} "
            f"{s.credit_percent:>3} %  {credit_reason(s.reliability, s.lost_events)}"
        )
    lines.append("data loss from: " + ", ".join(loss.sources))
    lines.extend(f"note: {n}" for n in loss.notes)
    return "\n".join(lines)


@dataclass(frozen=True)
class SlaReport:
    month: date
    sites: list[SiteSla]
    loss: LossReport
    windows: list[dict[str, Any]]

    @property
    def credit_owed(self) -> bool:
        return any(s.credit_percent for s in self.sites)

    def as_dict(self) -> dict[str, Any]:
        return {
            "month": label(self.month),
            "sites": [s.as_dict() for s in self.sites],
            "maintenance_windows": self.windows,
            "loss_sources": self.loss.sources,
            "notes": self.loss.notes,
        }

    def render(self) -> str:
        return render(self.month, self.sites, self.loss, self.windows)


async def sla_report(settings: Settings, month: date, site: uuid.UUID | None) -> SlaReport:
    conn = await connect(settings)
    try:
        sites, loss, windows = await report(conn, month, site, settings)
    finally:
        await conn.close()
    return SlaReport(month, sites, loss, windows)
