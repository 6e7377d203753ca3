"""The verdict on one scenario run, after the faults ended and the pipeline drained.

Assertions (issue 5):
  acknowledged ⊆ ledger        nothing lost
  ledger ⊆ sent                nothing invented
  no event_id twice            in the ledger
  reconcile drift 0            `opsmantik reconcile` exit 0, and our own invoice-vs-ledger query
  outbox empty
  no 5xx outside the windows where both engines were down

`evaluate` is pure (unit-tested in test_checker.py); `read_ledger_state` and `run_reconcile`
gather its inputs from the real database and CLI.
"""

from __future__ import annotations

import json
import math
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from services.db.queries import load_queries
from tests.chaos.loadgen import Attempt, LoadRecord

Q = load_queries(Path(__file__).with_name("checker.sql"))
NON_RETRYABLE_4XX = ("400", "401", "403", "404", "413", "415")


@dataclass(frozen=True)
class Window:
    start: float  # monotonic
    end: float

    def contains(self, t: float) -> bool:
        return self.start <= t <= self.end


@dataclass(frozen=True)
class LedgerState:
    ids: list[str]  # one entry per ledger row of the site (a duplicate would appear twice)
    outbox_depth: int
    event_drift: int
    quantity_drift: int


@dataclass(frozen=True)
class ReconcileResult:
    ok: bool
    detail: str


@dataclass
class Verdict:
    sent: int
    acked: int
    ledger: int
    outcomes: dict[str, int]
    attempts: dict[str, int]
    lost: list[str]
    invented: list[str]
    duplicated: list[str]
    drift: int
    outbox_depth: int
    reconcile_ok: bool
    fivexx_total: int
    fivexx_outside: int
    unexpected_4xx: int
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures


def is_5xx(kind: str) -> bool:
    return kind.isdigit() and 500 <= int(kind) < 600


def evaluate(load: LoadRecord, ledger: LedgerState, reconcile: ReconcileResult,
             allowed_5xx: list[Window]) -> Verdict:
    counts = Counter(ledger.ids)
    in_ledger = set(counts)
    lost = sorted(set(load.acked) - in_ledger)
    invented = sorted(in_ledger - load.sent)
    duplicated = sorted(eid for eid, n in counts.items() if n > 1)
    fivexx = [a for a in load.attempts if is_5xx(a.kind)]
    outside = [a for a in fivexx if not any(w.contains(a.t) for w in allowed_5xx)]
    attempts = load.attempt_counts()
    bad_4xx = sum(attempts.get(k, 0) for k in NON_RETRYABLE_4XX)
    drift = ledger.event_drift + ledger.quantity_drift
    v = Verdict(
        sent=len(load.sent), acked=len(load.acked), ledger=len(ledger.ids),
        outcomes=dict(load.outcome_counts()), attempts=dict(attempts),
        lost=lost, invented=invented, duplicated=duplicated, drift=drift,
        outbox_depth=ledger.outbox_depth, reconcile_ok=reconcile.ok,
        fivexx_total=len(fivexx), fivexx_outside=len(outside), unexpected_4xx=bad_4xx,
    )
    if lost:
        v.failures.append(f"{len(lost)} acknowledged events missing from the ledger, e.g. {lost[:5]}")
    if invented:
        v.failures.append(f"{len(invented)} ledger rows never sent, e.g. {invented[:5]}")
    if duplicated:
        v.failures.append(f"{len(duplicated)} event_ids twice in the ledger, e.g. {duplicated[:5]}")
    if drift:
        v.failures.append(f"invoice vs ledger drift {drift} (events {ledger.event_drift}, "
                          f"quantity {ledger.quantity_drift})")
    if not reconcile.ok:
        v.failures.append(f"opsmantik reconcile failed: {reconcile.detail}")
    if ledger.outbox_depth:
        v.failures.append(f"outbox not empty: {ledger.outbox_depth} rows")
    if outside:
        v.failures.append(f"{len(outside)} 5xx answers outside the both-engines-down window")
    if bad_4xx:
        v.failures.append(f"{bad_4xx} non-retryable 4xx answers to valid, authenticated requests")
    if load.acked and set(load.acked.values()) - {"accepted", "overlimit", "degraded", "fallback"}:
        v.failures.append(f"unknown outcomes in 200 bodies: {sorted(set(load.acked.values()))}")
    return v


def p95(values: list[float]) -> float | None:
    """Nearest-rank 95th percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def latencies_in(attempts: list[Attempt], window: Window, kind: str = "200") -> list[float]:
    return [a.latency_s for a in attempts if a.kind == kind and window.contains(a.t)]


async def read_ledger_state(database_url: str, site_id: str) -> LedgerState:
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        ids = [r["event_id"] for r in await conn.fetch(Q["ledger_ids"], site_id)]
        depth = await conn.fetchval(Q["outbox_depth"])
        drift = await conn.fetchrow(Q["invoice_drift"], site_id)
    finally:
        await conn.close()
    return LedgerState(ids, int(depth), int(drift["event_drift"]), int(drift["quantity_drift"]))


async def ledger_progress(database_url: str, site_id: str) -> tuple[set[str], int]:
    """The site's ledger ids and the outbox depth (the drain loop polls this)."""
    conn = await asyncpg.connect(database_url, timeout=5)
    try:
        ids = {r["event_id"] for r in await conn.fetch(Q["ledger_ids"], site_id)}
        return ids, int(await conn.fetchval(Q["outbox_depth"]))
    finally:
        await conn.close()


def run_reconcile(opsmantik: list[str], env: dict[str, str], month: str) -> ReconcileResult:
    """`opsmantik reconcile --month M --json`: exit 0 means no drift."""
    try:
        done = subprocess.run([*opsmantik, "reconcile", "--month", month, "--json"], env=env,
                              capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return ReconcileResult(False, "timed out after 60 s")
    out = (done.stdout or "").strip()
    detail = out.splitlines()[-1] if out else (done.stderr or "").strip()[-300:]
    try:
        json.loads(detail)
    except (ValueError, IndexError):
        detail = f"exit {done.returncode}: {detail[:300]}"
    return ReconcileResult(done.returncode == 0, detail)
