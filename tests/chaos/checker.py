"""The verdict on one scenario run, after the faults ended and the pipeline drained.

Assertions (issues 5 and 9):
  acknowledged ⊆ ledger        nothing lost
  ledger ⊆ sent                nothing invented
  topic vs ledger              every event_id on the ingest topic, however many copies it has
                               there (re-sends, relay re-produces), has exactly one ledger row,
                               and every ledger row has a message on the topic; no dead letters
  every 200 lists its events   each 200 body lists every sent event_id, in order
  reconcile drift 0            `opsmantik reconcile` exit 0, and our own invoice-vs-ledger query
  outbox empty
  no 5xx outside the windows where both engines were down
  the audit agrees             `opsmantik audit` audited every topic message of the site, found
                               unaccounted exactly the event_ids the checker finds on the topic
                               but not in the ledger, the same dead letters, and passes or fails
                               with the checker

`evaluate` is pure (unit-tested in test_checker.py); `read_ledger_state`, `read_topic`,
`run_reconcile` and `run_audit` gather its inputs from the real database, topic and CLI.
"""

from __future__ import annotations

import json
import math
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
from opsmantik.db.queries import load_queries

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
    dead_letters: int = 0  # of the site


@dataclass(frozen=True)
class AuditResult:
    """`opsmantik audit --month M --json`, seen for the scenario's site."""

    ran: bool  # exit 0 or 1 with a report
    passed: bool  # exit 0
    audited: int
    dead_lettered: int
    unaccounted: list[str]  # event_ids (or "?" when the message had none)
    breaches: int
    detail: str
    vanished: int = 0  # ledger rows it had confirmed that are gone since (it cannot name them)


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
    topic_copies: int  # messages of the site on the ingest topic
    extra_copies: int  # copies beyond the first of an event_id (each ledgered once)
    unledgered: list[str]  # on the topic, not in the ledger
    not_on_topic: list[str]  # in the ledger, no message on the topic
    bad_200: int
    audit_unaccounted: int
    audit_vanished: int
    audit_agrees: bool
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


def disagreements(
    topic: Counter[str], in_ledger: set[str], dead_letters: int, audit: AuditResult
) -> list[str]:
    """Where the audit's verdict differs from the checker's own view of the topic and ledger."""
    if not audit.ran:
        return [f"opsmantik audit did not run: {audit.detail}"]
    unledgered = set(topic) - in_ledger
    out = []
    if audit.audited != sum(topic.values()):
        out.append(
            f"audit audited {audit.audited} messages of the site, the topic holds {sum(topic.values())}"
        )
    named = set(audit.unaccounted)
    if not named <= unledgered or len(unledgered - named) != audit.vanished:
        out.append(
            f"audit unaccounted {sorted(named)[:5]} and {audit.vanished} vanished != checker's "
            f"unledgered {sorted(unledgered)[:5]}"
        )
    if audit.dead_lettered != dead_letters:
        out.append(f"audit dead-lettered {audit.dead_lettered}, the dead-letter table holds {dead_letters}")
    checker_ok = not unledgered and dead_letters == 0
    if audit.passed != checker_ok:
        out.append(
            f"audit {'passed' if audit.passed else 'failed'} ({audit.detail[:200]}), the checker "
            f"{'passed' if checker_ok else 'failed'} the topic vs ledger"
        )
    return out


def evaluate(
    load: LoadRecord,
    ledger: LedgerState,
    reconcile: ReconcileResult,
    allowed_5xx: list[Window],
    topic: Counter[str],
    audit: AuditResult,
) -> Verdict:
    counts = Counter(ledger.ids)
    in_ledger = set(counts)
    lost = sorted(set(load.acked) - in_ledger)
    invented = sorted(in_ledger - load.sent)
    duplicated = sorted(eid for eid, n in counts.items() if n > 1)
    unledgered = sorted(set(topic) - in_ledger)
    not_on_topic = sorted(in_ledger - set(topic))
    disagree = disagreements(topic, in_ledger, ledger.dead_letters, audit)
    fivexx = [a for a in load.attempts if is_5xx(a.kind)]
    outside = [a for a in fivexx if not any(w.contains(a.t) for w in allowed_5xx)]
    attempts = load.attempt_counts()
    bad_4xx = sum(attempts.get(k, 0) for k in NON_RETRYABLE_4XX)
    drift = ledger.event_drift + ledger.quantity_drift
    v = Verdict(
        sent=len(load.sent),
        acked=len(load.acked),
        ledger=len(ledger.ids),
        outcomes=dict(load.outcome_counts()),
        attempts=dict(attempts),
        lost=lost,
        invented=invented,
        duplicated=duplicated,
        topic_copies=sum(topic.values()),
        extra_copies=sum(topic.values()) - len(topic),
        unledgered=unledgered,
        not_on_topic=not_on_topic,
        bad_200=len(load.bad_200),
        audit_unaccounted=len(audit.unaccounted),
        audit_vanished=audit.vanished,
        audit_agrees=not disagree,
        drift=drift,
        outbox_depth=ledger.outbox_depth,
        reconcile_ok=reconcile.ok,
        fivexx_total=len(fivexx),
        fivexx_outside=len(outside),
        unexpected_4xx=bad_4xx,
    )
    if lost:
        v.failures.append(f"{len(lost)} acknowledged events missing from the ledger, e.g. {lost[:5]}")
    if invented:
        v.failures.append(f"{len(invented)} ledger rows never sent, e.g. {invented[:5]}")
    if duplicated:
        v.failures.append(f"{len(duplicated)} event_ids twice in the ledger, e.g. {duplicated[:5]}")
    if unledgered:
        v.failures.append(
            f"{len(unledgered)} event_ids on the topic ({v.topic_copies} copies in all) "
            f"without a ledger row, e.g. {unledgered[:5]}"
        )
    if not_on_topic:
        v.failures.append(
            f"{len(not_on_topic)} ledger rows with no message on the topic, e.g. {not_on_topic[:5]}"
        )
    if ledger.dead_letters:
        v.failures.append(f"{ledger.dead_letters} dead letters of the site (every event sent was valid)")
    if load.bad_200:
        b = load.bad_200[0]
        v.failures.append(
            f"{len(load.bad_200)} 200 answers did not list every sent event in order, e.g. "
            f"sent {b.sent[:5]} listed {None if b.listed is None else b.listed[:5]}"
        )
    if audit.breaches:
        v.failures.append(f"the audit found {audit.breaches} breach dead letters")
    if audit.unaccounted or audit.vanished:
        v.failures.append(
            f"the audit found {len(audit.unaccounted)} unaccounted messages and "
            f"{audit.vanished} vanished ledger rows"
        )
    v.failures.extend(f"the audit and the checker disagree: {d}" for d in disagree)
    if drift:
        v.failures.append(
            f"invoice vs ledger drift {drift} (events {ledger.event_drift}, quantity {ledger.quantity_drift})"
        )
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
        dead = await conn.fetchval(Q["dead_letters"], site_id)
    finally:
        await conn.close()
    return LedgerState(ids, int(depth), int(drift["event_drift"]), int(drift["quantity_drift"]), int(dead))


def read_topic(bootstrap: str, topic: str, site_id: str, timeout_s: float = 60.0) -> Counter[str]:
    """event_id -> copies on the ingest topic, for the messages keyed by the site (`site_id` or
    `site_id/<event_id>`, services/opsmantik/kafka/settings.py) (read to the end;
    independent of the audit's reader). A message without a readable event_id counts as "?"."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"checker-{time.monotonic_ns()}",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
        }
    )
    copies: Counter[str] = Counter()
    key = site_id.encode()
    try:
        parts = sorted(c.list_topics(topic, 10).topics[topic].partitions)
        ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), 10)[1] for p in parts}
        todo = {p for p, end in ends.items() if end > 0}
        c.assign([TopicPartition(topic, p, 0) for p in todo])
        deadline = time.monotonic() + timeout_s
        while todo:
            if time.monotonic() > deadline:
                raise TimeoutError(f"topic {topic} not read to its end in {timeout_s:.0f} s")
            msg = c.poll(0.5)
            if msg is None or msg.error():
                continue
            if (msg.key() or b"").split(b"/", 1)[0] == key:  # `site` or `site/event_id` keys
                try:
                    doc = json.loads(msg.value() or b"")
                    copies[str(doc["event_id"]) if isinstance(doc, dict) and "event_id" in doc else "?"] += 1
                except ValueError:
                    copies["?"] += 1
            if msg.offset() + 1 >= ends[msg.partition()]:
                todo.discard(msg.partition())
    finally:
        c.close()
    return copies


def run_audit(opsmantik: list[str], env: dict[str, str], month: str, site_id: str) -> AuditResult:
    """`opsmantik audit --month M --json` (it waits for the worker to commit what the topic holds)."""
    try:
        done = subprocess.run(
            [*opsmantik, "audit", "--month", month, "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return AuditResult(False, False, 0, 0, [], 0, "timed out after 120 s")
    try:
        report = json.loads((done.stdout or "").strip().splitlines()[-1])
    except (ValueError, IndexError):
        return AuditResult(False, False, 0, 0, [], 0, f"exit {done.returncode}: {done.stderr.strip()[-300:]}")
    site = next((s for s in report["sites"] if s["site"] == site_id), None) or {}
    unaccounted = [
        str(f["event_id"] or "?")
        for f in report["findings"]
        if f["kind"] == "unaccounted" and f["site"] == site_id
    ]
    return AuditResult(
        done.returncode in (0, 1),
        done.returncode == 0,
        int(site.get("audited", 0)),
        int(site.get("dead_lettered", 0)),
        unaccounted,
        int(site.get("breaches", 0)),
        f"exit {done.returncode}: {report['unaccounted']} unaccounted, "
        f"{report['breaches']} breaches, {report.get('vanished', 0)} vanished",
        int(site.get("vanished", 0)),
    )


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
        done = subprocess.run(
            [*opsmantik, "reconcile", "--month", month, "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return ReconcileResult(False, "timed out after 60 s")
    out = (done.stdout or "").strip()
    detail = out.splitlines()[-1] if out else (done.stderr or "").strip()[-300:]
    try:
        json.loads(detail)
    except (ValueError, IndexError):
        detail = f"exit {done.returncode}: {detail[:300]}"
    return ReconcileResult(done.returncode == 0, detail)
