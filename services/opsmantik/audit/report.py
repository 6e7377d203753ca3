"""`audit --month`: per site, what was audited and how it was accounted for, from the audit's tables."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date

import asyncpg

from opsmantik.db.queries import package_queries
from opsmantik.months import label

Q = package_queries("opsmantik.audit", "audit.sql")
MAX_LISTED = 1000  # findings listed by name; the counts are always complete


@dataclass(frozen=True)
class SiteAudit:
    site: str
    name: str | None
    audited: int
    ledgered: int
    dead_lettered: int
    unaccounted: int
    breaches: int
    vanished: int = 0  # ledger rows the audit confirmed that are gone since (all months)


@dataclass(frozen=True)
class PartitionState:
    partition: int
    audited_up_to: int
    worker_committed: int
    high_watermark: int


@dataclass(frozen=True)
class MonthAudit:
    month: date
    topic: str
    sites: list[SiteAudit]
    findings: list[dict[str, object]]
    partitions: list[PartitionState]

    @property
    def unaccounted(self) -> int:
        return sum(s.unaccounted for s in self.sites)

    @property
    def breaches(self) -> int:
        return sum(s.breaches for s in self.sites)

    @property
    def vanished(self) -> int:
        return sum(s.vanished for s in self.sites)

    @property
    def ok(self) -> bool:
        return self.unaccounted == 0 and self.breaches == 0 and self.vanished == 0

    @property
    def ahead_of_worker(self) -> int:
        """Messages the worker has not committed yet: not auditable until it does."""
        return sum(max(p.high_watermark - p.worker_committed, 0) for p in self.partitions)

    def as_dict(self) -> dict[str, object]:
        return {
            "month": label(self.month),
            "topic": self.topic,
            "ok": self.ok,
            "unaccounted": self.unaccounted,
            "breaches": self.breaches,
            "vanished": self.vanished,
            "audited": sum(s.audited for s in self.sites),
            "ahead_of_worker": self.ahead_of_worker,
            "sites": [asdict(s) for s in self.sites],
            "findings": self.findings,
            "partitions": [asdict(p) for p in self.partitions],
        }


async def month_audit(
    conn: asyncpg.Connection, topic: str, month: date, vanished: dict[str, int] | None = None
) -> MonthAudit:
    gone = dict(vanished or {})
    sites = [
        SiteAudit(**dict(r), vanished=gone.pop(r["site"], 0))
        for r in await conn.fetch(Q["month_sites"], topic, month)
    ]
    sites += [SiteAudit(site, None, 0, 0, 0, 0, 0, n) for site, n in sorted(gone.items())]
    findings = [
        {**dict(r), "found_at": r["found_at"].isoformat()}
        for r in await conn.fetch(Q["month_findings"], topic, month, MAX_LISTED)
    ]
    parts = [
        PartitionState(r["kafka_partition"], r["next_offset"], r["worker_committed"], r["high_watermark"])
        for r in await conn.fetch(Q["progress"], topic)
    ]
    return MonthAudit(month, topic, sites, findings, parts)


def render(a: MonthAudit) -> str:
    lines = [
        f"capture audit {a.month:%Y-%m} ({a.topic}): {len(a.sites)} site(s), "
        f"{a.unaccounted} unaccounted, {a.breaches} breach dead letter(s), "
        f"{a.vanished} confirmed ledger row(s) gone since"
    ]
    lines.append(
        f"{'site':36}  {'name':16} {'audited':>9} {'ledgered':>9} {'dead-let.':>9} "
        f"{'unaccounted':>11} {'breaches':>8} {'vanished':>8}"
    )
    for s in a.sites:
        flag = "" if s.unaccounted == 0 and s.breaches == 0 and s.vanished == 0 else "  LOSS"
        lines.append(
            f"{(s.site or '(no site)')[:36]:36}  {(s.name or '-')[:16]:16} {s.audited:>9} "
            f"{s.ledgered:>9} {s.dead_lettered:>9} {s.unaccounted:>11} {s.breaches:>8} "
            f"{s.vanished:>8}{flag}"
        )
    for f in a.findings:
        lines.append(
            f"{str(f['kind']).upper()} site {f['site'] or '?'} event_id {f['event_id']} "
            f"partition {f['kafka_partition']} offset {f['kafka_offset']}: {f['detail']}"
        )
    up_to = " ".join(f"p{p.partition}={p.audited_up_to}/{p.worker_committed}" for p in a.partitions)
    lines.append(
        f"audited up to / worker committed: {up_to or '(nothing yet)'}; "
        f"{a.ahead_of_worker} message(s) ahead of the worker, audited once it commits them"
    )
    return "\n".join(lines)
