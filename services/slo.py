"""The SLO figures for a month (seed §1): `opsmantik slo-report --month YYYY-MM [--json]`. (The
status page, services/status/, reuses the rollup queries here, never the ledger ones.)

availability  1 - 5xx / requests to /api/sync (4xx and 429 are not errors)      target 99.5 %
latency       p95 proxy: share of 5-minute windows where >= 95 % answered within 500 ms
freshness     share of minutes whose worst ledger lag was < 5 s                  target 99 %
integrity     ledger rows received in the month vs events the gateway captured (a re-sent
              event_id is captured twice but ledgered once, so ledger <= captured; the gap is
              resends plus whatever is still in the outbox or on the topic)
accuracy      invoice (site_usage_monthly) vs ledger rows billed in the month   target ±0
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from services import months
from services.config import Settings
from services.db.queries import load_queries

Q = load_queries(Path(__file__).with_name("slo.sql"))


def month_bounds(month: str) -> tuple[datetime, datetime]:
    first = months.parse_month(month)  # the one month parser: ValueError on 0000-01, 2026-13, 2026-1
    return months.month_start(first), months.month_end(first)


async def slo_snapshot(pool: asyncpg.Pool, month: str) -> dict[str, Any]:
    start, end = month_bounds(month)
    async with pool.acquire(timeout=2.0) as conn:
        avail = await conn.fetchrow(Q["availability"], start, end)
        windows = await conn.fetch(Q["latency_windows"], start, end)
        captured = await conn.fetchval(Q["captured"], start, end)
        fresh = await conn.fetchrow(Q["freshness"], start, end)
        ledger_received = await conn.fetchval(Q["ledger_received"], start, end)
        acc = await conn.fetchrow(Q["accuracy"], start.date())
        outbox = await conn.fetchval(Q["outbox"])
    requests, errors = avail["requests"], avail["errors_5xx"]
    availability = 1.0 if requests == 0 else 1 - errors / requests
    good_windows = sum(1 for w in windows if w["fast"] >= 0.95 * w["requests"])
    latency = 1.0 if not windows else good_windows / len(windows)
    freshness = 1.0 if fresh["minutes"] == 0 else fresh["fresh_minutes"] / fresh["minutes"]
    drift = acc["invoice"] - acc["ledger"]
    return {
        "month": month,
        "objectives": {
            "availability": {"value": round(availability, 6), "target": 0.995,
                             "met": availability >= 0.995, "requests": requests, "errors_5xx": errors},
            "latency_p95_under_500ms": {"value": round(latency, 6), "target": 1.0, "met": latency >= 1.0,
                                        "windows": len(windows), "windows_ok": good_windows},
            "freshness_under_5s": {"value": round(freshness, 6), "target": 0.99, "met": freshness >= 0.99,
                                   "minutes": fresh["minutes"], "events": fresh["events"],
                                   "events_within_5s": fresh["within_5s"]},
            "integrity": {"value": ledger_received, "target": captured,
                          "met": ledger_received <= captured, "captured": captured,
                          "ledger_rows": ledger_received, "outbox_pending": outbox},
            "accuracy": {"value": drift, "target": 0, "met": drift == 0, "invoice_events": acc["invoice"],
                         "ledger_rows": acc["ledger"]},
        },
    }


async def _report(settings: Settings, month: str) -> dict[str, Any]:
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=1)
    try:
        return await slo_snapshot(pool, month)
    finally:
        await pool.close()


def main(settings: Settings, args: argparse.Namespace) -> int:
    try:
        months.parse_month(args.month)
    except months.MonthError as exc:
        print(f"--month: {exc}", file=sys.stderr)
        return 2
    snap = asyncio.run(_report(settings, args.month))
    if args.json:
        print(orjson.dumps(snap).decode())
    else:
        print(f"SLO report {args.month}")
        for name, o in snap["objectives"].items():
            print(f"  {name:26} {str(o['value']):>12}  target {o['target']!s:>8}  "
                  f"{'met' if o['met'] else 'BREACHED'}")
    return 0 if all(o["met"] for o in snap["objectives"].values()) else 1
