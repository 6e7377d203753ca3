"""`opsmantik reconcile --month YYYY-MM [--json]`: invoice vs ledger per site; exit 1 on drift,
or when an outbox row is parked or older than 24 h (services/opsmantik/billing/backlog.py; dead letters
are shown,
the capture audit judges them: `opsmantik audit`).

Drift = invoice minus ledger (events, quantity, overlimit events and quantity) for the
billing month. By construction it is 0; anything else is a bug or a hand edit, and the
site is named. Results are stored in reconcile_results; the worker runs this for the
current and previous month periodically and exports opsmantik_billing_drift_*.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, replace
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import asyncpg
from prometheus_client import Gauge

from opsmantik.billing.backlog import Backlog, read_backlog
from opsmantik.config import Settings
from opsmantik.db.queries import package_queries
from opsmantik.months import label

Q = package_queries("opsmantik.billing", "reconcile.sql")
DRIFT_EVENTS = Gauge("opsmantik_billing_drift_events", "Invoice minus ledger events", ["site_id", "month"])
DRIFT_QUANTITY = Gauge(
    "opsmantik_billing_drift_quantity", "Invoice minus ledger quantity", ["site_id", "month"]
)
DRIFTING_SITES = Gauge("opsmantik_billing_drifting_sites", "Sites with any drift", ["month"])
DRIFT_RATIO = Gauge(
    "opsmantik_billing_drift_ratio",
    "Sum of |invoice - ledger| events over ledger events, all sites",
    ["month"],
)
_FIELDS = ("events", "quantity", "overlimit_events", "overlimit_quantity")


@dataclass(frozen=True)
class SiteDrift:
    site_id: uuid.UUID
    name: str | None
    ledger_events: int
    ledger_quantity: int
    ledger_overlimit_events: int
    ledger_overlimit_quantity: int
    invoice_events: int
    invoice_quantity: int
    invoice_overlimit_events: int
    invoice_overlimit_quantity: int

    def drift(self, field: str) -> int:
        invoiced: int = getattr(self, f"invoice_{field}")
        ledgered: int = getattr(self, f"ledger_{field}")
        return invoiced - ledgered

    @property
    def ok(self) -> bool:
        return all(self.drift(f) == 0 for f in _FIELDS)


@dataclass(frozen=True)
class Report:
    month: date
    run_at: datetime
    sites: list[SiteDrift]

    @property
    def drifting(self) -> list[str]:
        return [str(s.site_id) for s in self.sites if not s.ok]

    @property
    def ok(self) -> bool:
        return not self.drifting

    def as_dict(self) -> dict[str, object]:
        return {
            "month": label(self.month),
            "run_at": self.run_at.isoformat(),
            "ok": self.ok,
            "drifting_sites": self.drifting,
            "sites": [
                {
                    **asdict(s),
                    "site_id": str(s.site_id),
                    "ok": s.ok,
                    **{f"drift_{f}": s.drift(f) for f in _FIELDS},
                }
                for s in self.sites
            ],
        }


def _exact(r: asyncpg.Record) -> dict[str, Any]:
    """A row with its numeric sums as exact Python ints."""
    return {k: int(v) if isinstance(v, Decimal) else v for k, v in r.items()}


async def reconcile_month(conn: asyncpg.Connection, month: date) -> Report:
    rows = await conn.fetch(Q["compare_month"], month)
    # quantities are numeric (sums that cannot overflow): exact Python ints from here on
    found = [SiteDrift(**_exact(r)) for r in rows]
    # rows of archived usage months (opsmantik archive) are counted from the archive's totals
    archived = (
        {r["site_id"]: r for r in await conn.fetch(Q["archived_totals"], month)}
        if await conn.fetchval(Q["has_archives"])
        else {}
    )
    if archived:
        by_site = {s.site_id: s for s in found}
        for site_id, a in archived.items():
            s = by_site.get(site_id) or SiteDrift(site_id, None, *([0] * 8))
            by_site[site_id] = replace(
                s, **{f"ledger_{f}": getattr(s, f"ledger_{f}") + int(a[f]) for f in _FIELDS}
            )
        found = sorted(by_site.values(), key=lambda s: s.site_id)
    return Report(month, datetime.now(UTC), found)


async def record(conn: asyncpg.Connection, report: Report) -> None:
    s = report.sites
    await conn.execute(
        Q["record_results"],
        report.run_at,
        report.month,
        [x.site_id for x in s],
        [x.ledger_events for x in s],
        [x.ledger_quantity for x in s],
        [x.invoice_events for x in s],
        [x.invoice_quantity for x in s],
        *([x.drift(f) for x in s] for f in _FIELDS),
    )


def export(report: Report) -> None:
    month = label(report.month)
    for s in report.sites:
        DRIFT_EVENTS.labels(str(s.site_id), month).set(s.drift("events"))
        DRIFT_QUANTITY.labels(str(s.site_id), month).set(s.drift("quantity"))
    DRIFTING_SITES.labels(month).set(len(report.drifting))
    DRIFT_RATIO.labels(month).set(drift_ratio(report))


def drift_ratio(report: Report) -> float:
    """|drift| / ledger events over every site; a drift with an empty ledger counts as 100 %."""
    drift = sum(abs(s.drift("events")) for s in report.sites)
    ledger = sum(s.ledger_events for s in report.sites)
    return 0.0 if drift == 0 else drift / ledger if ledger else 1.0


def render(report: Report) -> str:
    lines = [f"reconcile {report.month:%Y-%m}: {len(report.sites)} site(s), {len(report.drifting)} drifting"]
    lines.append(
        f"{'site_id':36}  {'name':16} {'ledger ev':>10} {'invoice ev':>10} {'drift ev':>9} "
        f"{'drift qty':>10} {'drift over':>10}"
    )
    for s in report.sites:
        lines.append(
            f"{s.site_id}  {(s.name or '?')[:16]:16} {s.ledger_events:>10} {s.invoice_events:>10} "
            f"{s.drift('events'):>+9} {s.drift('quantity'):>+10} {s.drift('overlimit_events'):>+10}"
            + ("" if s.ok else "  DRIFT")
        )
    for s in report.sites:
        if not s.ok:
            lines.append(
                f"DRIFT site {s.site_id} ({s.name}): "
                + ", ".join(f"{f} {s.drift(f):+d}" for f in _FIELDS if s.drift(f))
            )
    return "\n".join(lines)


async def reconcile_now(settings: Settings, month: date) -> tuple[Report, Backlog]:
    """Reconcile `month`, record the result and export its gauges; with the outbox/dead-letter backlog."""
    conn = await asyncpg.connect(settings.database_url)
    try:
        report = await reconcile_month(conn, month)
        await record(conn, report)
        backlog = await read_backlog(conn, month)
    finally:
        await conn.close()
    export(report)
    return report, backlog
