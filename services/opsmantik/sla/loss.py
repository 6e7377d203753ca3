"""Data loss for the SLA report (seed §2.2, §3 "100 % on data loss") — the seam to the capture audit.

`data_loss(conn, month, settings)` is the only place the SLA report learns about loss. Today it
combines two sources:
1. dead letters of messages the gateway had acknowledged (they carry its `gateway_status`);
2. `opsmantik audit --month YYYY-MM --json` (the capture audit, when that command exists): a
   failing audit (exit 1) is loss for the sites it names (every reported site when it names none).
When the audit's result is stored, point `_audit` at it instead of the subprocess.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from datetime import date

import asyncpg

from opsmantik.config import Settings
from opsmantik.months import label, month_end, month_start
from opsmantik.sla.queries import Q

ALL_SITES = "*"


@dataclass
class LossReport:
    lost: dict[str, int] = field(default_factory=dict)  # site_id (or ALL_SITES) → lost events (≥ 1)
    sources: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def for_site(self, site: uuid.UUID) -> int:
        return self.lost.get(str(site), 0) + self.lost.get(ALL_SITES, 0)


def _site_ids(obj: object) -> set[str]:
    """Every value of a `site_id` key anywhere in the audit's JSON (its format is its own)."""
    found: set[str] = set()
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == "site_id" and isinstance(v, str):
                found.add(v)
            else:
                found |= _site_ids(v)
    elif isinstance(obj, list):
        for v in obj:
            found |= _site_ids(v)
    return found


def _audit(month: date, report: LossReport) -> None:
    cmd = [sys.executable, "-m", "opsmantik.cli", "audit", "--month", label(month), "--json"]
    try:
        done = subprocess.run(cmd, capture_output=True, timeout=300, env=dict(os.environ))
    except (OSError, subprocess.TimeoutExpired) as exc:
        report.notes.append(f"capture audit could not run ({type(exc).__name__}); loss from it unknown")
        return
    if done.returncode == 2 and b"invalid choice" in done.stderr:
        report.notes.append("capture audit (`opsmantik audit`) not available: dead letters only")
        return
    report.sources.append("opsmantik audit")
    if done.returncode == 0:
        return
    if done.returncode != 1:
        report.notes.append(f"capture audit could not run (exit {done.returncode}); loss from it unknown")
        return
    try:
        named = _site_ids(json.loads(done.stdout))
    except ValueError:
        named = set()
    for site in named or {ALL_SITES}:
        report.lost[site] = report.lost.get(site, 0) + 1
    report.notes.append("capture audit failed: " + (", ".join(sorted(named)) if named else "every site"))


async def data_loss(conn: asyncpg.Connection, month: date, settings: Settings) -> LossReport:
    report = LossReport(sources=["dead letters of acknowledged events"])
    for r in await conn.fetch(Q["dead_letters_accepted"], month_start(month), month_end(month)):
        report.lost[r["site_id"].lower()] = report.lost.get(r["site_id"].lower(), 0) + r["lost"]
    if settings.sla_loss_audit == "on":
        await asyncio.to_thread(_audit, month, report)
    else:
        report.notes.append("capture audit off (OPSMANTIK_SLA_LOSS_AUDIT=off): dead letters only")
    return report
