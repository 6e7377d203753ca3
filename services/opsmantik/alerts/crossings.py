"""Deciding a crossing: in the ledger's transaction (the worker) or a void's, in ledger order.

A rule's state per billing period is one row of alert_state: `over` once it has fired. After a
batch has updated the invoice and the meters (worker/ledger.py `decide_alerts`), each rule of the
batch's sites is compared for each billing period the batch touched:
- value ≥ line and not `over` → `usage.threshold.crossed`, `over` set;
- value < line and `over` → `usage.threshold.resolved`, `over` cleared (a void, or a SUM meter
  whose values are negative).
The notification is a row of alert_outbox written in the same transaction, so it exists iff the
batch (or void) committed: a retried, redelivered or replayed batch adds no ledger row, changes no
value and fires nothing; two batches of a site never interleave (the ledger's site locks), so
"once per period" holds with any number of workers. A rule fires again only after it resolved.

The values: quota rules read the invoice row (`site_usage_monthly.events`, locked by the batch);
meter rules keep a running total in alert_state.value, seeded from meter_buckets the first time a
(rule, period) is touched and then advanced by the batch's own increments (no scan of the month's
buckets per batch); a `meters backfill` (the meter's backfilled_at changes) or a void recomputes it.

The cost per batch follows the rules of the batch's sites, so it is kept to what moves: the states
are read per (site, period) pair, the running totals advanced in one statement per batch with a
row per (meter, site, period) (`advance_states`), and only the states that are new, recomputed or
crossed are written row by row (`save_states`). asyncpg encodes every array element with Python
calls: 100 rules read by key and written row by row were ~700 elements a batch, 1.3 of the 2.1 ms
of worker CPU a batch of such a site cost (docs/benchmarks.md "Usage alerts").
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import NamedTuple

import asyncpg
import orjson

from opsmantik.db.queries import package_queries
from opsmantik.meters.aggregate import Increments

Q = package_queries("opsmantik.alerts", "crossings.sql")
CROSSED = "usage.threshold.crossed"
RESOLVED = "usage.threshold.resolved"


class Rule(NamedTuple):  # built per rule and batch: a frozen dataclass costs ~3x more
    rule_id: uuid.UUID
    site_id: uuid.UUID
    kind: str  # quota_80, quota_100, hard_cap, meter
    meter_id: uuid.UUID | None
    threshold: Decimal | None
    monthly_quota: int | None
    hard_cap: int | None
    meter: str | None
    backfilled_at: datetime | None

    def line(self) -> Decimal | None:
        """The value at which the rule fires (None: the site has no quota/cap now)."""
        if self.kind == "meter":
            return self.threshold
        limit = self.hard_cap if self.kind == "hard_cap" else self.monthly_quota
        if limit is None:
            return None
        if self.kind == "quota_80":
            limit = -(-limit * 80 // 100)  # ceil: 80 % reached at the first event at or past it
        return Decimal(max(limit, 1))  # a zero quota/cap (or its 80 %): the first event reaches it


@dataclass
class State:
    value: Decimal
    basis: datetime | None
    over: bool
    changed: bool = False  # to write row by row (save_states)


@dataclass(frozen=True)
class Webhook:
    webhook_id: str
    rule_id: uuid.UUID
    site_id: uuid.UUID
    event_type: str
    body: bytes


def transition(over: bool, value: Decimal, line: Decimal) -> str | None:
    """The notification a new value brings, given whether the rule had fired (pure)."""
    if not over and value >= line:
        return CROSSED
    if over and value < line:
        return RESOLVED
    return None


def number(v: Decimal) -> int | float:
    """A JSON number: an integer when integral (the meters API's rule)."""
    return int(v) if v == v.to_integral_value() else float(v)


def webhook(
    rule: Rule, period: date, event_type: str, value: Decimal, line: Decimal, now: datetime
) -> Webhook:
    """The Standard Webhooks payload: {type, timestamp, data}; its bytes are what is signed."""
    data = {
        "rule_id": str(rule.rule_id),
        "site_id": str(rule.site_id),
        "rule": rule.kind,
        "meter": rule.meter,
        "period": f"{period:%Y-%m}",
        "threshold": number(line),
        "value": number(value),
        "monthly_quota": rule.monthly_quota,
        "hard_cap": rule.hard_cap,
    }
    body = orjson.dumps({"type": event_type, "timestamp": now.isoformat(), "data": data})
    return Webhook(f"msg_{uuid.uuid4().hex}", rule.rule_id, rule.site_id, event_type, body)


def meter_deltas(inc: Increments) -> dict[tuple[uuid.UUID, uuid.UUID, date], Decimal]:
    """(meter, site, billing month) → what the batch added to the meter's total."""
    out: dict[tuple[uuid.UUID, uuid.UUID, date], Decimal] = defaultdict(Decimal)
    for (meter_id, site_id, _minute, bmonth, _subject, _groups), b in inc.buckets.items():
        out[(meter_id, site_id, bmonth)] += b.total
    return out


async def _rules(conn: asyncpg.Connection, sites: Iterable[uuid.UUID]) -> list[Rule]:
    make = Rule._make
    return [make(r) for r in await conn.fetch(Q["site_rules"], list(sites))]


async def _states(
    conn: asyncpg.Connection, pairs: list[tuple[uuid.UUID, date]]
) -> dict[tuple[uuid.UUID, date], State]:
    """The states of every rule of these (site, period) pairs."""
    rows = await conn.fetch(Q["states"], [k[0] for k in pairs], [k[1] for k in pairs])
    return {(r["rule_id"], r["period"]): State(r["value"], r["basis"], r["over"]) for r in rows}


async def _invoice_events(
    conn: asyncpg.Connection, pairs: set[tuple[uuid.UUID, date]]
) -> dict[tuple[uuid.UUID, date], Decimal]:
    keys = sorted(pairs)
    rows = await conn.fetch(Q["invoice_events"], [k[0] for k in keys], [k[1] for k in keys])
    return {(r["site_id"], r["month"]): Decimal(r["events"]) for r in rows}


async def _meter_total(conn: asyncpg.Connection, rule: Rule, period: date) -> Decimal:
    return Decimal(await conn.fetchval(Q["meter_total"], rule.meter_id, rule.site_id, period))


async def decide(
    conn: asyncpg.Connection,
    touched: set[tuple[uuid.UUID, date]],
    inc: Increments | None,
    *,
    recompute: bool = False,
) -> list[Webhook]:
    """Compare every rule of the touched (site, billing period) pairs and write the state and the
    notifications. `inc`: the batch's meter increments (a running meter total advances by them);
    `recompute`: read meter totals afresh (a void changed them)."""
    if not touched:
        return []
    rules = await _rules(conn, {s for s, _ in touched})
    if not rules:
        return []
    periods: dict[uuid.UUID, list[date]] = defaultdict(list)
    for site, period in sorted(touched):
        periods[site].append(period)
    states = await _states(conn, sorted({(r.site_id, p) for r in rules for p in periods[r.site_id]}))
    invoice = await _invoice_events(
        conn, {(r.site_id, p) for r in rules if r.kind != "meter" for p in periods[r.site_id]}
    )
    deltas = meter_deltas(inc) if inc is not None else {}
    now = datetime.now(UTC)
    out: list[Webhook] = []
    advanced = False  # a stored running total moved by the batch's increment (advance_states)
    for rule in rules:
        for period in periods[rule.site_id]:
            state = states.get((rule.rule_id, period))
            fresh = True  # the value is not the stored one plus this batch's increment
            if rule.kind == "meter":
                value = await _meter_value(conn, rule, period, state, deltas, recompute)
                fresh = recompute or state is None or state.basis != rule.backfilled_at
                advanced = advanced or not fresh
            else:
                value = invoice.get((rule.site_id, period), Decimal(0))
            state = _advance(rule, period, state, value, now, out, fresh)
            states[(rule.rule_id, period)] = state
    if advanced:
        await _advance_totals(conn, deltas)
    await _save(conn, states)  # after advance_states: a row written here gets its exact value
    if out:
        await conn.execute(
            Q["insert_webhooks"],
            [w.webhook_id for w in out],
            [w.rule_id for w in out],
            [w.site_id for w in out],
            [w.event_type for w in out],
            [w.body for w in out],
        )
    return out


async def _meter_value(
    conn: asyncpg.Connection,
    rule: Rule,
    period: date,
    state: State | None,
    deltas: dict[tuple[uuid.UUID, uuid.UUID, date], Decimal],
    recompute: bool,
) -> Decimal:
    """The running total, advanced by the batch; read from the buckets when first seen, after a
    backfill (basis differs) or a void. The buckets already hold this batch's increments."""
    assert rule.meter_id is not None
    if recompute or state is None or state.basis != rule.backfilled_at:
        return await _meter_total(conn, rule, period)
    return state.value + deltas.get((rule.meter_id, rule.site_id, period), Decimal(0))


def _advance(
    rule: Rule,
    period: date,
    state: State | None,
    value: Decimal,
    now: datetime,
    out: list[Webhook],
    fresh: bool = True,
) -> State:
    """The state after `value`; a notification appended to `out` on a transition. `fresh`:
    the value was read (first seen, recomputed), not the stored one plus the batch's increment,
    which advance_states adds in the database."""
    over = state.over if state else False
    # A meter rule keeps its running total (written row by row when read afresh and moved, else
    # by advance_states); a quota rule reads the invoice each time and writes only on a transition.
    moved = state is None or state.value != value or state.basis != rule.backfilled_at
    new = State(value, rule.backfilled_at, over, changed=rule.kind == "meter" and moved and fresh)
    line = rule.line()
    if line is None:
        return new
    event = transition(over, value, line)
    if event is not None:
        new.over = event == CROSSED
        new.changed = True
        out.append(webhook(rule, period, event, value, line, now))
    return new


async def _advance_totals(
    conn: asyncpg.Connection, deltas: dict[tuple[uuid.UUID, uuid.UUID, date], Decimal]
) -> None:
    """Every stored running total of the batch's (meter, site, period) plus the batch's increment:
    the value `_meter_value` computed for each rule of it, written as one row per meter."""
    keys = sorted(deltas)
    await conn.execute(
        Q["advance_states"],
        [k[0] for k in keys],
        [k[1] for k in keys],
        [k[2] for k in keys],
        [deltas[k] for k in keys],
    )


async def _save(conn: asyncpg.Connection, states: dict[tuple[uuid.UUID, date], State]) -> None:
    """Only the states that changed: a quota rule that stays under writes nothing per batch."""
    changed = sorted(((k, s) for k, s in states.items() if s.changed), key=lambda ks: ks[0])
    if changed:
        await conn.execute(
            Q["save_states"],
            [k[0] for k, _ in changed],
            [k[1] for k, _ in changed],
            [s.value for _, s in changed],
            [s.basis for _, s in changed],
            [s.over for _, s in changed],
        )
