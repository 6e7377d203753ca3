"""Usage alerts' crossings, a property test (docs/alerts.md "Deciding a crossing").

`crossings.decide` (the code the worker's ledger transaction and a void's transaction run) is
driven over an in-memory database (a fake connection answering crossings.sql's six statements)
through random histories: batches of events of random quantities and values over two sites and
two billing months, with duplicates and redelivered batches, voids, quota/cap changes, meter
backfills and rules added mid-stream, across every rule kind (quota 80 %, quota 100 %, hard cap,
thresholds on a COUNT meter, the `quantity` SUM meter and a SUM meter with negative values).

The meters' increments a batch hands to `decide` are the worker's own (`aggregate.accumulate`);
everything the expectation uses is computed independently, from the ledger rows and the void
records only: after each transaction, each rule's value for each period the transaction touched
is recounted from scratch (rows billed in the period minus voids booked in it), and the
notifications that must exist are the changes of "value ≥ line" along that sequence. The outbox
must hold exactly those, no more, no fewer, each written by the transaction that made it, with
its value and threshold. tests/integration/test_alerts.py runs the same oracle against the real
worker's ledger once.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections import defaultdict
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from opsmantik.alerts import crossings
from opsmantik.meters import aggregate, definitions
from opsmantik.meters.definitions import QUANTITY, Meter
from opsmantik.meters.jsonpath import parse
from opsmantik.meters.values import Skip, event_data, value_of

from tests.support import alert_oracle as oracle

MONTHS = (date(2026, 10, 1), date(2026, 11, 1))
T0 = datetime(2026, 9, 1, tzinfo=UTC)
DELTA_TYPE = "llm_call"  # the `delta` meter's event type; other events are `api_call`


def _meter(slug: str, event_type: str, aggregation: str, value_property: str | None) -> Meter:
    path = parse(value_property) if value_property is not None and value_property != QUANTITY else None
    return Meter(uuid.uuid4(), slug, event_type, aggregation, value_property, {}, False, T0, None, path, ())


@dataclass
class Event:
    site: int
    event_id: str
    month: int  # index in MONTHS
    quantity: int
    event_type: str
    delta: object  # the `delta` property: a number, a decimal string, junk, or absent (None)

    def properties(self) -> str | None:
        return None if self.delta is None else orjson.dumps({"delta": self.delta}).decode()


# ---------------------------------------------------------------------------------------------
# The independent side: values from the ledger rows and voids, and the notifications they imply.


def contribution(slug: str, e: Event) -> Decimal:
    """What one ledger row adds to a meter's period total (docs/meters.md), computed apart from
    opsmantik.meters: `events` counts it, `quantity` adds its quantity, `delta` adds a numeric
    `delta` of an llm_call event (a number or a decimal string; anything else is skipped)."""
    if slug == "events":
        return Decimal(1)
    if slug == "quantity":
        return Decimal(e.quantity)
    if e.event_type != DELTA_TYPE or isinstance(e.delta, bool):
        return Decimal(0)
    if isinstance(e.delta, int):
        return Decimal(e.delta)
    if isinstance(e.delta, str) and e.delta.replace(".", "", 1).lstrip("-").isdigit():
        return Decimal(e.delta)
    return Decimal(0)


@dataclass
class OracleRule:
    rule_id: uuid.UUID
    site: int
    kind: str
    slug: str | None
    threshold: Decimal | None


@dataclass
class Ledger:
    """What the ledger holds, in ledger order: the rows (with the transaction that inserted them;
    transaction 0: rows ledgered before the `delta` meter was created), the voids (with theirs)
    and the meters' backfills (the first one's transaction)."""

    rows: list[tuple[int, Event]] = field(default_factory=list)
    voids: list[tuple[int, Event]] = field(default_factory=list)  # booked in the row's month
    backfilled: dict[str, int] = field(default_factory=dict)

    def counted(self, slug: str, row_txn: int, upto: int) -> bool:
        """docs/meters.md: a meter counts the rows ledgered after its creation, or every row once
        backfilled; the built-ins (and the invoice) count every row."""
        return slug != "delta" or row_txn > 0 or self.backfilled.get(slug, upto + 1) <= upto

    def value(self, rule: OracleRule, month: int, upto: int) -> Decimal:
        slug = rule.slug or "events"  # the built-ins read the invoice's event count
        txn_of = {e.event_id: t for t, e in self.rows}
        total = Decimal(0)
        for t, e in self.rows:
            if t <= upto and e.site == rule.site and e.month == month and self.counted(slug, t, upto):
                total += contribution(slug, e)
        for t, e in self.voids:
            if (
                t <= upto
                and e.site == rule.site
                and e.month == month
                and self.counted(slug, txn_of[e.event_id], upto)
            ):
                total -= contribution(slug, e)
        return total


Expected = tuple[int, uuid.UUID, str, str, Decimal, Decimal]  # txn, rule, period, type, value, line


def expected_notifications(
    ledger: Ledger,
    decisions: list[
        tuple[int, set[tuple[int, int]], list[OracleRule], dict[int, tuple[int | None, int | None]]]
    ],
) -> tuple[list[Expected], dict[tuple[uuid.UUID, int], bool]]:
    """`decisions`: per transaction that decided (a batch with new rows, a void), the (site,
    month) pairs it touched, the rules existing then and the sites' (quota, cap) then."""
    seq = [
        (
            txn,
            rule.rule_id,
            month,
            ledger.value(rule, month, txn),
            oracle.line(rule.kind, rule.threshold, *limits[site]),
        )
        for txn, touched, rules, limits in decisions
        for rule in rules
        for site, month in sorted(touched)
        if site == rule.site
    ]
    found, over = oracle.notifications(seq)
    return [(t, r, f"{MONTHS[m]:%Y-%m}", k, v, at) for t, r, m, k, v, at in found], over


# ---------------------------------------------------------------------------------------------
# The code's side: an in-memory database behind crossings.sql's statements.


class FakeDb:
    """The tables `decide` reads and writes: sites' limits, rules, meters, the invoice,
    meter_buckets' totals per (meter, site, billing month), alert_state, alert_outbox."""

    def __init__(self, meters: list[Meter]) -> None:
        self.meters = {m.meter_id: m for m in meters}
        self.limits: dict[uuid.UUID, tuple[int | None, int | None]] = {}
        self.rules: list[tuple[uuid.UUID, uuid.UUID, str, uuid.UUID | None, Decimal | None]] = []
        self.invoice: dict[tuple[uuid.UUID, date], int] = defaultdict(int)
        self.buckets: dict[tuple[uuid.UUID, uuid.UUID, date], Decimal] = defaultdict(Decimal)
        self.state: dict[tuple[uuid.UUID, date], dict[str, Any]] = {}
        self.outbox: list[tuple[int, uuid.UUID, str, dict[str, Any]]] = []  # txn, rule, type, body
        self.txn = 0

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        if sql == crossings.Q["site_rules"]:
            sites = set(args[0])
            out = []
            for rule_id, site, kind, meter_id, threshold in self.rules:
                if site in sites:
                    quota, cap = self.limits[site]
                    m = self.meters.get(meter_id) if meter_id else None
                    out.append(
                        (
                            rule_id,
                            site,
                            kind,
                            meter_id,
                            threshold,
                            quota,
                            cap,
                            m.slug if m else None,
                            m.backfilled_at if m else None,
                        )
                    )
            return out
        if sql == crossings.Q["states"]:  # every rule's state of the (site, period) pairs
            return [
                {"rule_id": r[0], "period": p, **self.state[(r[0], p)]}
                for s, p in zip(args[0], args[1], strict=True)
                for r in self.rules
                if r[1] == s and (r[0], p) in self.state
            ]
        if sql == crossings.Q["invoice_events"]:
            return [
                {"site_id": s, "month": m, "events": self.invoice[(s, m)]}
                for s, m in zip(args[0], args[1], strict=True)
                if (s, m) in self.invoice
            ]
        raise AssertionError(f"unexpected fetch {sql!r}")

    async def fetchval(self, sql: str, *args: Any) -> Any:
        assert sql == crossings.Q["meter_total"], sql
        return self.buckets.get((args[0], args[1], args[2]), Decimal(0))

    async def execute(self, sql: str, *args: Any) -> str:
        if sql == crossings.Q["save_states"]:
            for r, p, v, b, o in zip(*args, strict=True):
                self.state[(r, p)] = {"value": v, "basis": b, "over": o}
            return "INSERT"
        if sql == crossings.Q["advance_states"]:  # (meter, site, period, delta): every rule's state
            for meter_id, site, period, delta in zip(*args, strict=True):
                for r in self.rules:
                    if r[3] == meter_id and r[1] == site and (r[0], period) in self.state:
                        self.state[(r[0], period)]["value"] += delta
            return "UPDATE"
        if sql == crossings.Q["insert_webhooks"]:
            for _wid, rule_id, _site, kind, body in zip(*args, strict=True):
                self.outbox.append((self.txn, rule_id, kind, orjson.loads(body)))
            return "INSERT"
        raise AssertionError(f"unexpected execute {sql!r}")


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine that never suspends (the fake connection answers at once)."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    raise AssertionError("the fake connection suspended")


# ---------------------------------------------------------------------------------------------
# Histories.

SITE_LIMIT = st.one_of(st.integers(0, 6), st.integers(0, 6), st.integers(0, 6), st.none())
DELTA = st.one_of(
    st.none(),
    st.integers(-6, 9),
    st.integers(-3, 9),
    st.sampled_from(["2.5", "-1.5", "x", True, {"n": 1}]),
)


@st.composite
def events(draw: st.DrawFn, site: int) -> list[Event]:
    n = draw(st.integers(4, 12))
    return [
        Event(
            site,
            f"s{site}e{i}",
            draw(st.integers(0, 1)),
            draw(st.integers(1, 5)),
            draw(st.sampled_from([DELTA_TYPE, DELTA_TYPE, "api_call"])),
            draw(DELTA),
        )
        for i in range(n)
    ]


RULE = st.one_of(
    st.sampled_from([("quota_80", None, None), ("quota_100", None, None), ("hard_cap", None, None)]),
    st.tuples(st.just("meter"), st.just("events"), st.integers(1, 6).map(Decimal)),
    st.tuples(st.just("meter"), st.just("quantity"), st.integers(1, 15).map(Decimal)),
    st.tuples(st.just("meter"), st.just("delta"), st.sampled_from(["1", "2.5", "4", "7"]).map(Decimal)),
)
BATCH = st.tuples(
    st.just("batch"), st.lists(st.tuples(st.integers(0, 1), st.integers(0, 11)), min_size=1, max_size=7)
)
VOID = st.tuples(st.just("void"), st.integers(0, 1), st.integers(0, 50))
STEP = st.one_of(
    BATCH,
    BATCH,
    BATCH,
    VOID,
    VOID,
    VOID,
    st.tuples(st.just("redeliver"), st.integers(0, 50)),
    st.tuples(st.just("limits"), st.integers(0, 1), SITE_LIMIT, SITE_LIMIT),
    st.tuples(st.just("backfill"), st.sampled_from(["events", "quantity", "delta", "delta"])),
    st.tuples(st.just("rule"), st.integers(0, 1), RULE),
)


@dataclass
class History:
    limits: list[tuple[int | None, int | None]]
    pools: list[list[Event]]
    rules: list[tuple[int, tuple[str, str | None, Decimal | None]]]
    steps: list[tuple[Any, ...]]
    before: list[tuple[int, int]] = field(default_factory=list)  # ledgered before `delta` existed


@st.composite
def histories(draw: st.DrawFn) -> History:
    limits = [(draw(SITE_LIMIT), draw(SITE_LIMIT)) for _ in range(2)]
    builtins = [("quota_80", None, None), ("quota_100", None, None), ("hard_cap", None, None)]
    rules = [
        (site, rule) for site in range(2) for rule in builtins + draw(st.lists(RULE, min_size=1, max_size=4))
    ]
    steps = draw(st.lists(STEP, min_size=4, max_size=40))
    before = draw(st.lists(st.tuples(st.integers(0, 1), st.integers(0, 11)), max_size=6))
    return History(limits, [draw(events(0)), draw(events(1))], rules, steps, before)


class Harness:
    """Plays a history as the worker and `events void` do (the touched (site, billing month)
    pairs, the invoice, the meters' buckets), calls `crossings.decide` per transaction, and keeps
    the ledger the oracle reads."""

    def __init__(self, h: History) -> None:
        self.meters = {
            "events": _meter("events", "*", "COUNT", None),
            "quantity": _meter("quantity", "*", "SUM", QUANTITY),
            "delta": _meter("delta", DELTA_TYPE, "SUM", "$.delta"),
        }
        self.db = FakeDb(list(self.meters.values()))
        self.site_ids = [uuid.uuid4(), uuid.uuid4()]
        self.pools = h.pools
        self.limits = {i: h.limits[i] for i in range(2)}
        for i, lim in self.limits.items():
            self.db.limits[self.site_ids[i]] = lim
        self.rules: list[OracleRule] = []
        self.ledger = Ledger()
        self.ledgered: dict[str, Event] = {}
        self.voided: set[str] = set()
        self.ledgered_at: dict[str, datetime] = {}
        self.batches: list[list[Event]] = []
        self.decisions: list[Any] = []
        self.clock = T0 + timedelta(days=30)
        for site, rule in h.rules:
            self.add_rule(site, rule)
        before = [self.pools[s][i % len(self.pools[s])] for s, i in h.before]
        self.insert(before, [self.meters["events"], self.meters["quantity"]])
        self.clock += timedelta(seconds=1)
        self.db.meters[self.meters["delta"].meter_id] = self.meters["delta"] = dataclasses.replace(
            self.meters["delta"], created_at=self.clock
        )

    def add_rule(self, site: int, rule: tuple[str, str | None, Decimal | None]) -> None:
        kind, slug, threshold = rule
        quota, cap = self.limits[site]
        if kind in ("quota_80", "quota_100") and quota is None or kind == "hard_cap" and cap is None:
            return  # `alerts create` refuses a built-in the site has no limit for
        rule_id = uuid.uuid4()
        meter_id = self.meters[slug].meter_id if slug else None
        self.db.rules.append((rule_id, self.site_ids[site], kind, meter_id, threshold))
        self.rules.append(OracleRule(rule_id, site, kind, slug, threshold))

    def decide(self, touched: set[tuple[int, int]], inc: aggregate.Increments | None) -> None:
        pairs = {(self.site_ids[s], MONTHS[m]) for s, m in touched}
        run(crossings.decide(self.db, pairs, inc, recompute=inc is None))
        self.decisions.append((self.db.txn, touched, list(self.rules), dict(self.limits)))

    def fact(self, e: Event, voided: bool = False) -> aggregate.Fact:
        month = MONTHS[e.month]
        props = e.properties()
        return aggregate.Fact(
            self.site_ids[e.site],
            e.event_id,
            e.event_type,
            self.clock,
            month,
            e.quantity,
            props,
            None,
            month if voided else None,
        )

    def insert(self, evs: list[Event], meters: list[Meter]) -> tuple[list[Event], aggregate.Increments]:
        """The worker's batch: the new rows (the first copy wins, a copy of a ledgered event adds
        nothing) on the invoice and in the meters' buckets."""
        new: list[Event] = []
        for e in evs:
            if e.event_id not in self.ledgered:
                self.ledgered[e.event_id] = e
                new.append(e)
        for e in new:
            self.ledgered_at[e.event_id] = self.clock
            self.ledger.rows.append((self.db.txn, e))
            self.db.invoice[(self.site_ids[e.site], MONTHS[e.month])] += 1
        inc = aggregate.accumulate(meters, [self.fact(e) for e in new])
        for (meter_id, site_id, _minute, bmonth, _subject, _groups), b in inc.buckets.items():
            self.db.buckets[(meter_id, site_id, bmonth)] += b.total
        return new, inc

    def batch(self, evs: list[Event]) -> None:
        self.db.txn += 1
        self.clock += timedelta(seconds=1)
        new, inc = self.insert(evs, list(self.meters.values()))
        if new:  # a batch of duplicates decides nothing (worker/ledger.py)
            self.decide({(e.site, e.month) for e in new}, inc)

    def backfill(self, slug: str) -> None:
        """`meters backfill`: the meter's buckets rebuilt from every ledger row and void
        (aggregate.accumulate with voided_into, as meters/backfill.py), backfilled_at moved."""
        self.db.txn += 1
        self.clock += timedelta(seconds=1)
        self.ledger.backfilled.setdefault(slug, self.db.txn)
        m = self.db.meters[self.meters[slug].meter_id] = self.meters[slug] = dataclasses.replace(
            self.meters[slug], backfilled_at=self.clock
        )
        for key in [k for k in self.db.buckets if k[0] == m.meter_id]:
            del self.db.buckets[key]
        facts = [self.fact(e, e.event_id in self.voided) for _t, e in self.ledger.rows]
        for (meter_id, site_id, _minute, bmonth, _subject, _groups), b in aggregate.accumulate(
            [m], facts
        ).buckets.items():
            self.db.buckets[(meter_id, site_id, bmonth)] += b.total

    def void(self, site: int, pick: int) -> None:
        live = [e for e in self.ledgered.values() if e.site == site and e.event_id not in self.voided]
        if not live:
            return  # `events void` refuses an unknown event
        e = live[pick % len(live)]
        self.db.txn += 1
        self.voided.add(e.event_id)
        self.ledger.voids.append((self.db.txn, e))
        site_id, month = self.site_ids[site], MONTHS[e.month]  # every month open: booked = billed
        self.db.invoice[(site_id, month)] -= 1
        data = event_data(e.event_id, orjson.loads(e.properties()) if e.properties() else None)
        for m in self.meters.values():  # meters/voids.py: a negative entry in the booked month
            if m.matches(e.event_type) and definitions.counted(m, self.ledgered_at[e.event_id]):
                v = value_of(m, data, e.quantity)
                if not isinstance(v, Skip):
                    self.db.buckets[(m.meter_id, site_id, month)] -= aggregate.additive(v)
        self.decide({(site, e.month)}, None)

    def play(self, steps: list[tuple[Any, ...]]) -> None:
        for step in steps:
            match step:
                case ("batch", picks):
                    evs = [self.pools[s][i % len(self.pools[s])] for s, i in picks]
                    self.batches.append(evs)
                    self.batch(evs)
                case ("redeliver", k):
                    if self.batches:
                        self.batch(self.batches[k % len(self.batches)])
                case ("void", site, pick):
                    self.void(site, pick)
                case ("limits", site, quota, cap):
                    self.limits[site] = (quota, cap)  # `sites` update: read at the next decision
                    self.db.limits[self.site_ids[site]] = (quota, cap)
                case ("backfill", slug):
                    self.backfill(slug)
                case ("rule", site, rule):
                    self.add_rule(site, rule)

    def actual(self) -> list[Expected]:
        out = []
        for txn, rule_id, kind, body in self.db.outbox:
            data = body["data"]
            value, line = Decimal(str(data["value"])), Decimal(str(data["threshold"]))
            out.append((txn, rule_id, data["period"], kind, value, line))
        return out


def check(h: History) -> None:
    harness = Harness(h)
    harness.play(h.steps)
    expected, above = expected_notifications(harness.ledger, harness.decisions)
    assert sorted(harness.actual(), key=repr) == sorted(expected, key=repr)
    over = {(r, p): s["over"] for (r, p), s in harness.db.state.items()}
    for (rule_id, month), is_above in above.items():
        assert over.get((rule_id, MONTHS[month]), False) == is_above


def _pool(site: int, deltas: list[object]) -> list[Event]:
    return [Event(site, f"s{site}e{i}", 0, 1, DELTA_TYPE, d) for i, d in enumerate(deltas)]


# A backfill that brings rows ledgered before the meter into its total: the running total must be
# read afresh (basis changed). Rare in the random histories (found at ~1,000 examples), so pinned.
BACKFILL = History(
    [(None, None), (None, None)],
    [_pool(0, [3, 0, 1]), _pool(1, [1])],
    [(0, ("meter", "delta", Decimal(4)))],
    [("batch", [(0, 1)]), ("backfill", "delta"), ("batch", [(0, 2)]), ("void", 0, 0), ("batch", [(1, 0)])],
    before=[(0, 0)],
)


# Single-event batches under a meter line: the second and later batches advance the stored running
# total (advance_states), the third crosses. A total that is not advanced in the database misses the
# crossing; the random histories found that in one of two runs of 150 examples, so pinned.
STEADY = History(
    [(None, None), (None, None)],
    [[Event(0, f"s0e{i}", 0, 1, "api_call", None) for i in range(4)], _pool(1, [1])],
    [(0, ("meter", "events", Decimal(3))), (0, ("meter", "quantity", Decimal(4)))],
    [("batch", [(0, 0)]), ("batch", [(0, 1)]), ("batch", [(0, 2)]), ("batch", [(0, 3)])],
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories())
@example(BACKFILL)
@example(STEADY)
def test_the_outbox_holds_exactly_the_crossings_the_ledger_implies(h: History) -> None:
    check(h)


def test_a_crossing_in_one_batch_then_a_void_under_the_line_resolves() -> None:
    """A fixed history (the property's smallest interesting case, and a guard that the oracle
    itself sees crossings): quota 2, two events, one voided."""
    pool = [Event(0, f"s0e{i}", 0, 1, "api_call", None) for i in range(3)]
    h = History([(2, None), (None, None)], [pool, [Event(1, "s1e0", 0, 1, "api_call", None)]], [], [])
    h.rules = [(0, ("quota_100", None, None)), (0, ("meter", "quantity", Decimal(2)))]
    h.steps = [("batch", [(0, 0), (0, 1), (0, 0)]), ("void", 0, 0), ("batch", [(0, 1)]), ("batch", [(0, 2)])]
    harness = Harness(h)
    harness.play(h.steps)
    kinds = [(t, k) for t, _r, _p, k, _v, _l in harness.actual()]
    assert sorted(kinds) == [
        (1, crossings.CROSSED),
        (1, crossings.CROSSED),
        (2, crossings.RESOLVED),
        (2, crossings.RESOLVED),
        (4, crossings.CROSSED),
        (4, crossings.CROSSED),
    ]
    check(h)
