"""The status page's snapshot, refreshed in the background; requests only read its bytes.

Every `status_refresh_s` the refresher reads the live signals (broker probe, its own single
Postgres connection: never the gateway's pool, which the outbox path needs), derives the component
states and adds one check per component to today's rollup. Every `status_slo_refresh_s` it also
reads the month's SLO figures, the 90-day rollups, incidents and maintenance windows. It then
renders the HTML and JSON once; /status and /status.json serve those bytes as they are.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import logging
import os
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

import asyncpg
from prometheus_client.metrics_core import Metric

from opsmantik.config import Settings
from opsmantik.months import label, month_bounds, month_of
from opsmantik.sla.slo import Q as SLO_Q
from opsmantik.status import figures, page, summary
from opsmantik.status.components import (
    Signals,
    derive,
    indicator,
)
from opsmantik.status.model import (
    BAR_DAYS,
    DayBar,
    Incident,
    IncidentUpdate,
    Maintenance,
    Snapshot,
    build_bars,
)
from opsmantik.status.signals import (
    BrokerProbe,
    CounterWindow,
    DbReading,
    Q,
    monotonic,
    read_db,
    to_signals,
    utcnow,
)
from opsmantik.status.signals import usage_counts as read_usage_counts

log = logging.getLogger("opsmantik.status")
KEEP_DAYS = 100  # daily rollups older than this are deleted


@dataclass(frozen=True)
class SlowFigures:
    """What the status page reads once a minute: the month's SLO figures, the day bars,
    incidents and maintenance windows."""

    month: str
    slo: list[figures.SloFigure]
    bars: dict[str, list[DayBar]]
    incidents: list[Incident]
    maintenances: list[Maintenance]
    figures_at: datetime


@dataclass(frozen=True)
class Body:
    """One rendering, ready to send: the bytes, their gzip form (browsers and CDNs accept it) and
    an ETag (a revalidation answers 304 without a body)."""

    raw: bytes
    gzip: bytes
    etag: str

    @classmethod
    def of(cls, raw: bytes) -> Body:
        return cls(raw, gzip.compress(raw, 6, mtime=0), '"' + hashlib.sha256(raw).hexdigest()[:20] + '"')


@dataclass(frozen=True)
class Rendered:
    html: Body
    json: Body


@dataclass
class StatusRefresher:
    settings: Settings
    breaker_state: Callable[[], str]
    collect_metrics: Callable[[], Iterable[Metric]]
    instance: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:status")
    snapshot: Snapshot | None = None
    rendered: Rendered | None = None
    refreshes: int = 0
    failures: int = 0
    _pool: asyncpg.Pool | None = None
    _probe: BrokerProbe | None = None
    _usage_window: CounterWindow | None = None
    _slow_due: float = 0.0

    async def start(self) -> None:
        s = self.settings
        # One connection of its own (min 0: the gateway starts with Postgres down).
        self._pool = await asyncpg.create_pool(
            s.database_url, min_size=0, max_size=1, timeout=s.status_probe_timeout_s
        )
        self._probe = BrokerProbe(s, s.status_probe_timeout_s)
        self._usage_window = CounterWindow(s.status_window_s)
        self.snapshot = self._initial()
        self._render()

    def _initial(self) -> Snapshot:
        now = utcnow()
        comps = derive(Signals(broker_reachable=True, breaker_state="closed", db_reachable=True))
        return Snapshot(
            now,
            indicator(comps),
            comps,
            build_bars([], now.date()),
            label(month_of(now)),
            [],
            [],
            [],
            None,
            True,
        )

    async def close(self) -> None:
        if self._pool is not None:
            await asyncio.wait_for(self._pool.close(), 3.0)

    async def run(self) -> None:
        while True:
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the page keeps its last snapshot; retried next round
                self.failures += 1
                log.exception("status refresh failed; serving the previous snapshot")
            await asyncio.sleep(self.settings.status_refresh_s)

    async def refresh(self, full: bool = False) -> Snapshot:
        """One refresh; `full` reads the month figures, rollups and incidents now (else when due)."""
        assert self._pool is not None and self._probe is not None and self._usage_window is not None
        s = self.settings
        now = utcnow()
        usage = self._usage_window.add(monotonic(), *read_usage_counts(self.collect_metrics))
        broker_task = asyncio.create_task(self._probe.reachable())
        reading: DbReading | None = None
        conn: asyncpg.Connection | None = None
        prev = self.snapshot or self._initial()
        slow: SlowFigures | None = None
        try:
            async with self._pool.acquire(timeout=s.status_probe_timeout_s) as conn:
                reading = await read_db(conn, now, s.status_window_s, s.status_probe_timeout_s)
                broker = await broker_task
                sig = to_signals(now, broker, self.breaker_state(), reading, usage)
                comps = derive(sig)
                await conn.execute(
                    Q["add_component_checks"],
                    now.date(),
                    self.instance,
                    [c.id for c in comps],
                    [c.status for c in comps],
                    timeout=s.status_probe_timeout_s,
                )
                if full or monotonic() >= self._slow_due or prev.figures_at is None:
                    slow = await self._read_slow(conn, now)
                    self._slow_due = monotonic() + s.status_slo_refresh_s
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            if reading is None:  # Postgres unreachable: that is a signal, not a failure
                log.info("status: postgres unreachable (%s)", type(exc).__name__)
            else:
                log.warning("status: a query failed after connecting: %s", exc)
            broker = await broker_task
            sig = to_signals(now, broker, self.breaker_state(), reading, usage)
            comps = derive(sig)
        incidents = slow.incidents if slow else prev.incidents
        impacts = [i.impact for i in incidents if i.resolved_at is None]
        snap = replace(
            prev,
            updated_at=now,
            components=comps,
            db_reachable=sig.db_reachable,
            indicator=indicator(comps, impacts, sig.maintenance_active),
        )
        if slow:
            snap = replace(
                snap,
                month=slow.month,
                slo=slow.slo,
                bars=slow.bars,
                incidents=slow.incidents,
                maintenances=slow.maintenances,
                figures_at=slow.figures_at,
            )
        self.snapshot = snap
        self.refreshes += 1
        self._render()
        return snap

    async def _read_slow(self, conn: asyncpg.Connection, now: datetime) -> SlowFigures:
        t = self.settings.status_probe_timeout_s * 5  # month sums read more rows; still bounded
        month = month_of(now)
        start, end = month_bounds(month)
        avail = await conn.fetchrow(SLO_Q["availability"], start, end, timeout=t)
        windows = await conn.fetch(SLO_Q["latency_windows"], start, end, timeout=t)
        fresh = await conn.fetchrow(SLO_Q["freshness"], start, end, timeout=t)
        risk = await conn.fetchrow(Q["month_at_risk"], start, end, now - timedelta(hours=24), timeout=t)
        acc = await conn.fetchrow(Q["month_accuracy"], start.date(), timeout=t)
        ok_windows = sum(1 for w in windows if w["fast"] >= 0.95 * w["requests"])
        slo = [
            figures.availability(avail["requests"], avail["errors_5xx"]),
            figures.latency(len(windows), ok_windows),
            figures.freshness(fresh["minutes"], fresh["fresh_minutes"]),
            figures.integrity(risk["outbox_overdue"], risk["parked"], risk["dead_letters"]),
            figures.accuracy(
                acc["run_at"] if acc else None, acc["drift"] if acc else 0, acc["ledger"] if acc else 0
            ),
        ]
        today = now.date()
        await conn.execute(Q["prune_component_daily"], today - timedelta(days=KEEP_DAYS), timeout=t)
        rows = await conn.fetch(Q["daily_rollups"], today - timedelta(days=BAR_DAYS - 1), timeout=t)
        incidents = await read_incidents(conn, now, t)
        maint: list[Maintenance] = []
        if await conn.fetchval(Q["has_maintenance_windows"], timeout=t):
            maint = [
                Maintenance(r["id"], r["reason"], r["starts_at"], r["ends_at"], r["created_at"])
                for r in await conn.fetch(Q["maintenance_windows"], now, timeout=t)
            ]
        return SlowFigures(label(month), slo, build_bars(rows, today), incidents, maint, now)

    def _render(self) -> None:
        assert self.snapshot is not None
        self.rendered = Rendered(
            Body.of(page.render(self.snapshot, self.settings).encode()),
            Body.of(summary.render(self.snapshot, self.settings)),
        )


async def read_incidents(conn: asyncpg.Connection, now: datetime, timeout_s: float) -> list[Incident]:
    rows = await conn.fetch(Q["incidents"], now, timeout=timeout_s)
    updates = await conn.fetch(Q["incident_updates"], [r["id"] for r in rows], timeout=timeout_s)
    by: dict[int, list[IncidentUpdate]] = {}
    for u in updates:
        by.setdefault(u["incident_id"], []).append(
            IncidentUpdate(u["id"], u["status"], u["body"], u["created_at"])
        )
    return [
        Incident(
            r["id"],
            r["name"],
            r["impact"],
            r["status"],
            list(r["components"]),
            r["created_at"],
            r["updated_at"],
            r["resolved_at"],
            by.get(r["id"], []),
        )
        for r in rows
    ]
