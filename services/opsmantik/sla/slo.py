"""The SLO figures for a month (seed §1): `opsmantik slo-report --month YYYY-MM [--json]`. (The
status page, services/opsmantik/status/, reuses the rollup queries here, never the ledger ones.)

availability  1 - 5xx / requests to /api/sync (4xx and 429 are not errors)      target 99.5 %
latency       p95 proxy: share of 5-minute windows where >= 95 % answered within 500 ms
freshness     share of minutes whose worst ledger lag was < 5 s                  target 99 %
integrity     from the capture audit (services/opsmantik/audit): topic messages of the month the worker
              committed past that are in neither the ledger nor the dead letters (unaccounted),
              plus dead letters of events the gateway accepted (breaches); met only at 0 and 0,
              and only once the audit has seen the month when the gateway captured events in it
fallback_24h  outbox rows older than 24 h (the SLA: fallback events processed within 24 h)
accuracy      invoice (site_usage_monthly) vs ledger rows billed in the month   target ±0

The CLI runs one audit catch-up first (the tables the /status page reads are kept current by
`opsmantik audit --follow`); dead letters and outbox rows (pending, parked, > 24 h) are listed.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import asyncpg

from opsmantik import months
from opsmantik.billing.backlog import read_backlog
from opsmantik.config import Settings
from opsmantik.db.queries import package_queries

Q = package_queries("opsmantik.sla", "slo.sql")


async def slo_snapshot(pool: asyncpg.Pool, month: date) -> dict[str, Any]:
    start, end = months.month_bounds(month)
    async with pool.acquire(timeout=2.0) as conn:
        avail = await conn.fetchrow(Q["availability"], start, end)
        windows = await conn.fetch(Q["latency_windows"], start, end)
        captured = await conn.fetchval(Q["captured"], start, end)
        fresh = await conn.fetchrow(Q["freshness"], start, end)
        ledger_received = await conn.fetchval(Q["ledger_received"], start, end)
        acc = await conn.fetchrow(Q["accuracy"], start.date())
        audit = await conn.fetchrow(Q["audit_month"], start.date())
        backlog = await read_backlog(conn, start.date())
    requests, errors = avail["requests"], avail["errors_5xx"]
    availability = 1.0 if requests == 0 else 1 - errors / requests
    good_windows = sum(1 for w in windows if w["fast"] >= 0.95 * w["requests"])
    latency = 1.0 if not windows else good_windows / len(windows)
    freshness = 1.0 if fresh["minutes"] == 0 else fresh["fresh_minutes"] / fresh["minutes"]
    drift = acc["invoice"] - acc["ledger"]
    return {
        "month": months.label(month),
        "objectives": {
            "availability": {
                "value": round(availability, 6),
                "target": 0.995,
                "met": availability >= 0.995,
                "requests": requests,
                "errors_5xx": errors,
            },
            "latency_p95_under_500ms": {
                "value": round(latency, 6),
                "target": 1.0,
                "met": latency >= 1.0,
                "windows": len(windows),
                "windows_ok": good_windows,
            },
            "freshness_under_5s": {
                "value": round(freshness, 6),
                "target": 0.99,
                "met": freshness >= 0.99,
                "minutes": fresh["minutes"],
                "events": fresh["events"],
                "events_within_5s": fresh["within_5s"],
            },
            "integrity": {
                "value": audit["unaccounted"] + audit["breaches"],
                "target": 0,
                "met": (
                    audit["unaccounted"] == 0
                    and audit["breaches"] == 0
                    and (audit["audited"] > 0 or captured == 0)
                ),
                "unaccounted": audit["unaccounted"],
                "breach_dead_letters": audit["breaches"],
                "audited": audit["audited"],
                "audited_ledgered": audit["ledgered"],
                "audited_dead_lettered": audit["dead_lettered"],
                "audit_updated_at": audit["updated_at"],
                "captured": captured,
                "ledger_rows": ledger_received,
            },
            "fallback_within_24h": {
                "value": backlog.outbox_older_than_24h,
                "target": 0,
                "met": backlog.outbox_older_than_24h == 0,
            },
            "accuracy": {
                "value": drift,
                "target": 0,
                "met": drift == 0,
                "invoice_events": acc["invoice"],
                "ledger_rows": acc["ledger"],
            },
        },
        "backlog": backlog.as_dict(),
    }


async def slo_report(settings: Settings, month: date) -> dict[str, Any]:
    """The month's SLO snapshot, after one audit catch-up (its problem noted when Kafka is away)."""
    from opsmantik.audit.main import refresh

    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=2)
    try:
        problem = await refresh(settings, pool)
        snap = await slo_snapshot(pool, month)
        if problem:
            snap["objectives"]["integrity"]["audit_refresh_error"] = problem
        return snap
    finally:
        await pool.close()


def render(month: date, snap: dict[str, Any]) -> str:
    lines = [f"SLO report {months.label(month)}"]
    for name, o in snap["objectives"].items():
        lines.append(
            f"  {name:26} {str(o['value']):>12}  target {o['target']!s:>8}  "
            f"{'met' if o['met'] else 'BREACHED'}"
        )
    i, b = snap["objectives"]["integrity"], snap["backlog"]
    lines.append(
        f"  integrity: {i['audited']} topic messages audited, {i['unaccounted']} unaccounted, "
        f"{i['breach_dead_letters']} breach dead letters"
        + (f" (audit not refreshed: {i['audit_refresh_error']})" if "audit_refresh_error" in i else "")
    )
    lines.append(
        f"  outbox: {b['outbox_pending']} pending, {b['outbox_parked']} parked, "
        f"{b['outbox_older_than_24h']} older than 24 h; dead letters: {b['dead_letters_month']} "
        f"this month ({b['dead_letters_total']} in all)"
    )
    return "\n".join(lines)


def all_met(snap: dict[str, Any]) -> bool:
    return all(o["met"] for o in snap["objectives"].values())
