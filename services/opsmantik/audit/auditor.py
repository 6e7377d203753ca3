"""One audit cycle, the unit both `audit --follow` and `audit --month` run:

1. take the topic's advisory lock (one auditor at a time; the other waits or skips),
2. read the worker group's committed offsets: only messages below them are audited (the
   worker acks a message after its ledger COMMIT, and commits offsets after acking),
3. read the messages from the audit's own progress up to those offsets,
4. in one transaction: look each up in the ledger (site_id, event_id) and the dead letters
   (topic, partition, offset), add the counts and findings, advance the progress,
5. COMMIT, so a restart resumes exactly after the last audited offset.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date

import asyncpg

from opsmantik.audit import metrics
from opsmantik.audit.inspection import Inspected, inspect
from opsmantik.audit.reader import Bounds, TopicReader
from opsmantik.config import Settings
from opsmantik.db.queries import package_queries

Q = package_queries("opsmantik.audit", "audit.sql")
log = logging.getLogger("opsmantik.audit")
KAFKA_TIMEOUT_S = 5.0  # per broker call: a broker away costs a cycle about this long


@dataclass(frozen=True)
class Finding:
    kind: str  # unaccounted | breach
    message: Inspected
    detail: str


@dataclass
class CycleResult:
    audited: int = 0
    ledgered: int = 0
    dead_lettered: int = 0
    findings: list[Finding] = field(default_factory=list)
    bounds: dict[int, Bounds] = field(default_factory=dict)
    positions: dict[int, int] = field(default_factory=dict)  # audited up to, per partition

    @property
    def caught_up(self) -> bool:
        return all(self.positions.get(p, 0) >= b.committed for p, b in self.bounds.items())


def account(
    messages: list[Inspected],
    ledgered: set[tuple[uuid.UUID, str]],
    dead: set[tuple[int, int]],
    sites: set[uuid.UUID],
) -> tuple[list[str], list[Finding]]:
    """Each message's outcome ("ledgered" | "dead_lettered" | "unaccounted") and the findings."""
    outcomes: list[str] = []
    findings: list[Finding] = []
    for m in messages:
        if m.ledger_key is not None and m.ledger_key in ledgered:
            outcomes.append("ledgered")
        elif (m.partition, m.offset) in dead:
            outcomes.append("dead_lettered")
            if m.gateway_valid and m.site_id in sites:
                findings.append(Finding("breach", m, "dead-lettered, yet a valid gateway message"))
        else:
            outcomes.append("unaccounted")
            findings.append(
                Finding(
                    "unaccounted",
                    m,
                    "below the worker's committed offset, in neither "
                    "the ledger nor the dead letters"
                    + ("" if m.gateway_valid else f" ({m.gateway_problem})"),
                )
            )
    return outcomes, findings


class Auditor:
    def __init__(self, settings: Settings, pool: asyncpg.Pool, reader: TopicReader | None = None) -> None:
        self.settings, self.pool = settings, pool
        self.topic = settings.topic
        self.reader = reader or TopicReader(
            settings.kafka_bootstrap, settings.topic, settings.worker_group, settings.audit_group
        )

    async def bounds(self) -> dict[int, Bounds]:
        return await asyncio.to_thread(self.reader.bounds, KAFKA_TIMEOUT_S)

    async def cycle(self, max_messages: int = 20_000) -> CycleResult | None:
        """One cycle; None when another auditor holds the topic's lock."""
        async with self.pool.acquire() as conn:
            if not await conn.fetchval(Q["try_lock"], self.topic):
                return None
            try:
                return await self._cycle(conn, max_messages)
            finally:
                await conn.fetchval(Q["unlock"], self.topic)

    async def _cycle(self, conn: asyncpg.Connection, max_messages: int) -> CycleResult:
        result = CycleResult(bounds=await self.bounds())
        rows = await conn.fetch(Q["progress"], self.topic)
        progress = {r["kafka_partition"]: r["next_offset"] for r in rows}
        ranges: dict[int, tuple[int, int]] = {}
        for p, b in result.bounds.items():
            start = progress.get(p, 0)
            if start < b.low:
                log.warning(
                    "partition %d: offsets %d..%d were deleted by retention before being audited",
                    p,
                    start,
                    b.low - 1,
                )
                start = b.low
            ranges[p] = (start, max(start, b.committed))
        raw, done = await asyncio.to_thread(self.reader.read, ranges, max_messages, KAFKA_TIMEOUT_S)
        result.positions = done
        messages = [inspect(m) for m in raw]
        keys = [m.ledger_key for m in messages if m.ledger_key is not None]
        async with conn.transaction():
            position = (
                {
                    (r["site_id"], r["event_id"]): (r["kafka_partition"], r["kafka_offset"])
                    for r in await conn.fetch(Q["ledgered_keys"], [k[0] for k in keys], [k[1] for k in keys])
                }
                if keys
                else {}
            )
            ledgered = set(position)
            dead = (
                {
                    (r["kafka_partition"], r["kafka_offset"])
                    for r in await conn.fetch(
                        Q["dead_letters"],
                        self.topic,
                        [m.partition for m in messages],
                        [m.offset for m in messages],
                    )
                }
                if messages
                else set()
            )
            site_ids = list({m.site_id for m in messages if m.site_id is not None})
            sites = (
                {r["site_id"] for r in await conn.fetch(Q["known_sites"], site_ids)} if site_ids else set()
            )
            outcomes, result.findings = account(messages, ledgered, dead, sites)
            counts: dict[tuple[str, date], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
            for m, outcome in zip(messages, outcomes, strict=True):
                c = counts[(m.site, m.month)]
                c[0] += 1
                c[1] += outcome == "ledgered"
                c[2] += outcome == "dead_lettered"
                c[3] += (
                    outcome == "ledgered"
                    and m.ledger_key is not None
                    and position.get(m.ledger_key) == (m.partition, m.offset)
                )
            if counts:
                ks = sorted(counts)
                await conn.execute(
                    Q["add_counts"],
                    self.topic,
                    [k[0] for k in ks],
                    [k[1] for k in ks],
                    *([counts[k][i] for k in ks] for i in range(4)),
                )
            if result.findings:
                f = result.findings
                await conn.execute(
                    Q["add_findings"],
                    self.topic,
                    [x.message.partition for x in f],
                    [x.message.offset for x in f],
                    [x.kind for x in f],
                    [x.message.site for x in f],
                    [x.message.site_id for x in f],
                    [x.message.event_id for x in f],
                    [x.message.month for x in f],
                    [x.message.gateway_valid for x in f],
                    [x.detail for x in f],
                )
            parts = sorted(result.bounds)
            await conn.execute(
                Q["save_progress"],
                self.topic,
                parts,
                [done.get(p, 0) for p in parts],
                [result.bounds[p].committed for p in parts],
                [result.bounds[p].high for p in parts],
            )
            resolved = await conn.fetch(Q["resolve_findings"], self.topic)
        await asyncio.to_thread(self.reader.record_position, done, KAFKA_TIMEOUT_S)
        result.audited = len(messages)
        result.ledgered = outcomes.count("ledgered")
        result.dead_lettered = outcomes.count("dead_lettered")
        for x in result.findings:
            log.error(
                "AUDIT %s: partition %d offset %d site %s event_id %s: %s",
                x.kind.upper(),
                x.message.partition,
                x.message.offset,
                x.message.site or "?",
                x.message.event_id,
                x.detail,
            )
        for r in resolved:
            log.warning(
                "audit: partition %d offset %d is accounted for now (resolved)",
                r["kafka_partition"],
                r["kafka_offset"],
            )
        metrics.count(
            result.ledgered, result.dead_lettered, result.audited - result.ledgered - result.dead_lettered
        )
        await self.export(conn, result)
        return result

    async def vanished(self) -> dict[str, int]:
        """Per site: ledger rows the audit confirmed that are no longer in the ledger."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(Q["vanished"], self.topic)
        found = {r["site"]: int(r["vanished"]) for r in rows}
        metrics.VANISHED.set(sum(found.values()))
        for site, n in found.items():
            log.error("AUDIT VANISHED: %d ledger row(s) of site %s confirmed by the audit are gone", n, site)
        return found

    async def export(self, conn: asyncpg.Connection, result: CycleResult) -> None:
        totals = await conn.fetchrow(Q["totals"], self.topic)
        offsets = {p: (result.positions.get(p, 0), b.committed, b.high) for p, b in result.bounds.items()}
        metrics.export(totals["unaccounted"], totals["breaches"], offsets)

    async def catch_up(self, max_cycles: int = 1000) -> CycleResult:
        """Cycles until audited up to the worker's committed offsets (waits for another auditor)."""
        total = CycleResult()
        stalled = 0  # cycles that read nothing while behind (a slow broker): a few, then give up
        for _ in range(max_cycles):
            r = await self.cycle()
            if r is None:
                await asyncio.sleep(0.2)
                continue
            total.audited += r.audited
            total.ledgered += r.ledgered
            total.dead_lettered += r.dead_lettered
            total.findings += r.findings
            total.bounds, total.positions = r.bounds, r.positions
            stalled = 0 if r.audited else stalled + 1
            if r.caught_up or stalled >= 3:
                break
        return total

    def close(self) -> None:
        self.reader.close()
