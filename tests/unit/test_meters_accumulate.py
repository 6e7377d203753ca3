"""aggregate.accumulate against the per-fact reference (the rule written out plainly: every fact,
every matching meter, Bucket.add / add_voided / subtract), on random facts and meters: the
built-in `events` and `quantity` (tallied per distinct (type, site, occurred_at, billing month,
subject), issue 35) beside meters that read the event's data, groups, ordered aggregations and
voided facts. OPSMANTIK_SEED reproduces a run."""

from __future__ import annotations

import os
import random
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import orjson
import pytest
from opsmantik.meters import aggregate
from opsmantik.meters.aggregate import Bucket, Fact, Increments, accumulate, minute
from opsmantik.meters.definitions import QUANTITY, Meter
from opsmantik.meters.jsonpath import parse
from opsmantik.meters.values import Skip, event_data, groups_of, value_of

SEED = int(os.environ.get("OPSMANTIK_SEED", random.randrange(1 << 30)))
T0 = datetime(2026, 11, 30, 23, 57, tzinfo=UTC)


def meter(aggregation: str, value: str | None = None, event_type: str = "*", **group_by: str) -> Meter:
    return Meter(
        uuid.uuid4(),
        f"m-{uuid.uuid4().hex[:8]}",
        event_type,
        aggregation,
        value,
        group_by,
        False,
        T0,
        None,
        parse(value) if value is not None and value != QUANTITY else None,
        tuple((name, parse(path)) for name, path in sorted(group_by.items())),
    )


def reference(
    meters: list[Meter], facts: list[Fact], bucket_of: Callable[[datetime], datetime] = minute
) -> Increments:
    """Each fact and each meter on its own."""
    inc = Increments()
    for fact in facts:
        props = orjson.loads(fact.properties) if fact.properties else None
        data = event_data(fact.event_id, props)
        at, subject = bucket_of(fact.occurred_at), fact.subject or ""
        for m in meters:
            if not m.matches(fact.event_type):
                continue
            value = value_of(m, data, fact.quantity)
            if isinstance(value, Skip):
                inc.skipped[(m.slug, value.reason)] += 1
                continue
            groups = groups_of(m, data) if m.group_paths else "{}"
            if isinstance(groups, Skip):
                inc.skipped[(m.slug, groups.reason)] += 1
                continue
            b = inc.bucket((m.meter_id, fact.site_id, at, fact.billing_month, subject, groups))
            if fact.voided_into is None:
                b.add(fact, value, m.aggregation in aggregate.ORDERED)
            else:
                b.add_voided(value)
                inc.bucket((m.meter_id, fact.site_id, at, fact.voided_into, subject, groups)).subtract(value)
    return inc


def random_facts(rng: random.Random, n: int) -> list[Fact]:
    sites = [uuid.uuid4() for _ in range(3)]
    facts = []
    for i in range(n):
        at = T0 + timedelta(seconds=rng.choice([0, 0, 0, 1, 59, 61, 200]), microseconds=rng.randrange(3))
        props = rng.choice(
            [
                None,
                {"tokens": rng.randrange(-5, 50), "model": rng.choice(["a", "b"])},
                {"tokens": "12.5", "model": None},
                {"tokens": True},
                {"model": {"nested": 1}},
            ]
        )
        facts.append(
            Fact(
                rng.choice(sites),
                f"e-{i}" if rng.random() < 0.9 else f"ce~{i}",
                rng.choice(["page_view", "api_call"]),
                at,
                rng.choice([date(2026, 11, 1), date(2026, 12, 1)]),
                rng.choice([1, 1, 2, 7, 10**9]),
                orjson.dumps(props).decode() if props is not None else None,
                rng.choice([None, "cust-1", "cust-2", ""]),
                rng.choice([None] * 8 + [date(2027, 1, 1)]),
            )
        )
    return facts


def as_dict(inc: Increments) -> tuple[dict[object, tuple[object, ...]], Counter[tuple[str, str]]]:
    return {
        k: (b.n, b.total, b.lo, b.hi, b.latest, frozenset(b.uniques)) for k, b in inc.buckets.items()
    }, inc.skipped


@pytest.mark.parametrize("round_", range(40))
def test_accumulate_equals_each_fact_and_meter_on_its_own(round_: int) -> None:
    rng = random.Random(SEED * 1000 + round_)
    pool = [
        meter("COUNT"),
        meter("SUM", QUANTITY),
        meter("AVG", QUANTITY, "api_call"),
        meter("COUNT", None, "page_view"),
        meter("MAX", QUANTITY),
        meter("LATEST", QUANTITY),
        meter("SUM", "$.tokens"),
        meter("COUNT", None, "*", model="$.model"),
        meter("UNIQUE_COUNT", "$.model"),
        meter("MIN", "$.tokens", "page_view"),
    ]
    meters = rng.sample(pool, rng.randrange(1, len(pool) + 1))
    facts = random_facts(rng, rng.randrange(0, 300))
    bucket_of = rng.choice([minute, lambda t: t.replace(minute=t.minute // 15 * 15, second=0, microsecond=0)])
    got = accumulate(meters, facts, bucket_of=bucket_of)
    want = reference(meters, facts, bucket_of)
    assert as_dict(got) == as_dict(want), f"OPSMANTIK_SEED={SEED} round {round_}"
    # into: a second call adds to the same increments, as the separate calls would
    half = len(facts) // 2
    twice = accumulate(meters, facts[half:], accumulate(meters, facts[:half], bucket_of=bucket_of), bucket_of)
    assert as_dict(twice) == as_dict(want), f"OPSMANTIK_SEED={SEED} round {round_}"


def test_the_builtin_meters_are_tallied_and_the_others_not() -> None:
    assert aggregate.tallied(meter("COUNT")) and aggregate.tallied(meter("SUM", QUANTITY))
    assert aggregate.tallied(meter("AVG", QUANTITY))
    for m in (meter("MAX", QUANTITY), meter("SUM", "$.tokens"), meter("COUNT", None, "*", g="$.model")):
        assert not aggregate.tallied(m)


def test_a_tallied_bucket_holds_count_and_sum() -> None:
    site = uuid.uuid4()
    facts = [Fact(site, f"e{i}", "t", T0, date(2026, 11, 1), q, None, None) for i, q in enumerate([1, 2, 3])]
    events, quantity = meter("COUNT"), meter("SUM", QUANTITY)
    inc = accumulate([events, quantity], facts)
    key = (site, T0, date(2026, 11, 1), "", "{}")
    assert (inc.buckets[(events.meter_id, *key)].n, inc.buckets[(events.meter_id, *key)].total) == (3, 3)
    assert (inc.buckets[(quantity.meter_id, *key)].n, inc.buckets[(quantity.meter_id, *key)].total) == (
        3,
        Decimal(6),
    )
    assert isinstance(inc.buckets[(quantity.meter_id, *key)], Bucket)
