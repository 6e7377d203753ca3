"""`opsmantik reconcile --month YYYY-MM [--json]`: invoice vs ledger per site; exit 1 on drift,
or when an outbox row is parked or older than 24 h (services/opsmantik/billing/backlog.py; dead letters
are shown,
the capture audit judges them: `opsmantik audit`).

Drift = invoice minus ledger (events, quantity, overlimit events and quantity) for the
billing month. By construction it is 0; anything else is a bug or a hand edit, and the
site is named. The command compares every site (`full_pass`) and stores the result in
reconcile_results.

The worker reconciles the current and previous month periodically (`incremental_pass`) and exports
opsmantik_billing_drift_*: its cost follows the active sites, not the number of sites (issue 28).
Each month's latest comparison per site is kept (reconcile_sites, reconcile_months: migration
0016); a pass compares again only the sites whose invoice row changed since the previous pass
(site_usage_monthly.updated_at, which every ledger batch, void and planted row sets) and the sites
found drifting, and updates the month's figures from the differences. A month no pass has seen yet
gets a full pass. A hand edit that leaves updated_at alone (or deletes a ledger row) is found by
the next full pass: `opsmantik reconcile`.
"""

from __future__ import annotations

import contextlib
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
# A pass reads invoice rows updated from this long before the previous pass on (docs/worker.md).
OVERLAP_S = 60.0


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


# ------------------------------------------------------------ the kept state (migration 0016)


@dataclass(frozen=True)
class MonthState:
    """A month's reconcile figures after a pass: the drifting sites and the ledger events of all."""

    month: date
    run_at: datetime
    full_at: datetime
    ledger_events: int  # over every site (the drift ratio's denominator)
    drifting_sites: list[SiteDrift]
    compared: int = 0  # sites the pass compared (0: read, not compared)
    full: bool = False

    @property
    def ok(self) -> bool:
        return not self.drifting_sites

    @property
    def drifting(self) -> list[str]:
        return [str(s.site_id) for s in self.drifting_sites]

    def drift_ratio(self) -> float:
        """As `drift_ratio` of a full report of the month: the non-drifting sites add no drift."""
        drift = sum(abs(s.drift("events")) for s in self.drifting_sites)
        return 0.0 if drift == 0 else drift / self.ledger_events if self.ledger_events else 1.0


def _month_key(month: date) -> int:
    return month.year * 100 + month.month


_ARCHIVED: dict[date, tuple[tuple[int, datetime | None], dict[uuid.UUID, asyncpg.Record]]] = {}


async def _archived_totals(conn: asyncpg.Connection, month: date) -> dict[uuid.UUID, asyncpg.Record]:
    """The archive's per-site totals billed in `month`, read again only after an archive changed."""
    v = await conn.fetchrow(Q["archives_version"])
    version = (int(v["n"]), v["latest"])
    cached = _ARCHIVED.get(month)
    if cached is None or cached[0] != version:
        rows = await conn.fetch(Q["archived_totals"], month) if version[0] else []
        cached = _ARCHIVED[month] = (version, {r["site_id"]: r for r in rows})
    return cached[1]


def _with_archived(
    found: list[SiteDrift], archived: dict[uuid.UUID, Any], only: set[uuid.UUID]
) -> list[SiteDrift]:
    by_site = {s.site_id: s for s in found}
    for site_id in only & archived.keys():
        a = archived[site_id]
        s = by_site.get(site_id) or SiteDrift(site_id, None, *([0] * 8))
        by_site[site_id] = replace(
            s, **{f"ledger_{f}": getattr(s, f"ledger_{f}") + int(a[f]) for f in _FIELDS}
        )
    return sorted(by_site.values(), key=lambda s: s.site_id)


async def _save_sites(conn: asyncpg.Connection, month: date, at: datetime, sites: list[SiteDrift]) -> None:
    await conn.execute(
        Q["save_sites"],
        month,
        at,
        [s.site_id for s in sites],
        *([getattr(s, f"{side}_{f}") for s in sites] for side in ("ledger", "invoice") for f in _FIELDS),
    )


async def _drifting(conn: asyncpg.Connection, month: date) -> list[SiteDrift]:
    return [SiteDrift(**_exact(r)) for r in await conn.fetch(Q["drifting_sites"], month)]


async def full_pass(conn: asyncpg.Connection, month: date) -> tuple[Report, MonthState]:
    """Compare every site of `month` (`reconcile_month`) and make that the month's kept state.
    Waits for a pass of the month running elsewhere (a worker's)."""
    async with conn.transaction():
        await conn.execute(Q["pass_lock_wait"], _month_key(month))
        return await _full(conn, month)


async def _full(conn: asyncpg.Connection, month: date) -> tuple[Report, MonthState]:
    mark = await conn.fetchval(Q["watermark"], OVERLAP_S)  # before the comparison reads anything
    report = await reconcile_month(conn, month)
    await conn.execute(Q["forget_sites"], month)
    for i in range(0, len(report.sites), 10_000):
        await _save_sites(conn, month, report.run_at, report.sites[i : i + 10_000])
    ledger = sum(s.ledger_events for s in report.sites)
    await conn.execute(Q["save_month"], month, report.run_at, mark, ledger, True)
    drifting = [s for s in report.sites if not s.ok]
    return report, MonthState(month, report.run_at, report.run_at, ledger, drifting, len(report.sites), True)


async def incremental_pass(conn: asyncpg.Connection, month: date) -> MonthState | None:
    """The worker's periodic pass: compare again the sites whose invoice row changed since the last
    pass and the drifting ones, and update the month's figures by the difference (a month no pass
    has seen yet gets a full pass). None when another pass of the month holds its lock."""
    async with conn.transaction():
        if not await conn.fetchval(Q["pass_lock"], _month_key(month)):
            return None
        prev = await conn.fetchrow(Q["month_state"], month)
        if prev is None:
            return (await _full(conn, month))[1]
        mark = await conn.fetchval(Q["watermark"], OVERLAP_S)
        run_at = datetime.now(UTC)
        ids = [r["site_id"] for r in await conn.fetch(Q["changed_sites"], month, prev["checked_to"])]
        ledger_delta = 0
        if ids:
            found = [SiteDrift(**_exact(r)) for r in await conn.fetch(Q["compare_sites"], month, ids)]
            found = _with_archived(found, await _archived_totals(conn, month), set(ids))
            by_site = {s.site_id: s for s in found}
            # a site with neither invoice nor ledger rows left (a planted row deleted) compares as zeros
            now = [by_site.get(i) or SiteDrift(i, None, *([0] * 8)) for i in ids]
            before = {
                r["site_id"]: int(r["ledger_events"]) for r in await conn.fetch(Q["sites_state"], month, ids)
            }
            ledger_delta = sum(s.ledger_events - before.get(s.site_id, 0) for s in now)
            await _save_sites(conn, month, run_at, now)
        await conn.execute(Q["save_month"], month, run_at, mark, ledger_delta, False)
        drifting = await _drifting(conn, month)
        ledger = int(prev["ledger_events"]) + ledger_delta
        return MonthState(month, run_at, prev["full_at"], ledger, drifting, len(ids), False)


async def read_state(conn: asyncpg.Connection, month: date) -> MonthState | None:
    """The month's kept figures as the last pass left them (None: no pass yet)."""
    row = await conn.fetchrow(Q["month_state"], month)
    if row is None:
        return None
    return MonthState(
        month, row["run_at"], row["full_at"], int(row["ledger_events"]), await _drifting(conn, month)
    )


_EXPORTED: dict[str, set[str]] = {}  # month -> the sites whose drift gauges are set


def export_state(state: MonthState) -> None:
    """The gauges of a month's state: a per-site series for each drifting site only (a site that no
    longer drifts loses its series), the drifting-site count and the drift ratio."""
    month = label(state.month)
    shown = {str(s.site_id) for s in state.drifting_sites}
    for gone in _EXPORTED.get(month, set()) - shown:
        for gauge in (DRIFT_EVENTS, DRIFT_QUANTITY):
            with contextlib.suppress(KeyError):
                gauge.remove(gone, month)
    for s in state.drifting_sites:
        DRIFT_EVENTS.labels(str(s.site_id), month).set(s.drift("events"))
        DRIFT_QUANTITY.labels(str(s.site_id), month).set(s.drift("quantity"))
    _EXPORTED[month] = shown
    DRIFTING_SITES.labels(month).set(len(state.drifting_sites))
    DRIFT_RATIO.labels(month).set(state.drift_ratio())


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
    """Reconcile `month` (every site: the month's kept state is reset from it), record the result
    and export its gauges; with the outbox/dead-letter backlog."""
    conn = await asyncpg.connect(settings.database_url)
    try:
        report, _state = await full_pass(conn, month)
        await record(conn, report)
        backlog = await read_backlog(conn, month)
    finally:
        await conn.close()
    export(report)
    return report, backlog
