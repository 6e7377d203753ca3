"""ledger.dedupe_in_order against the rule written plainly (ledger order (partition, offset), the
first copy of a (site, event_id) wins) on random batches with and without copies: the no-copy
fast path (issue 35) and the loop give the same list."""

from __future__ import annotations

import random
import uuid

import pytest
from opsmantik.worker.ledger import dedupe_in_order
from opsmantik.worker.message import IngestEvent


def event(site: uuid.UUID, event_id: str, partition: int, offset: int) -> IngestEvent:
    fields = dict.fromkeys(IngestEvent._fields)
    fields.update(site_id=site, event_id=event_id, partition=partition, offset=offset, key=(site, event_id))
    return IngestEvent(**fields)  # type: ignore[arg-type]


def reference(events: list[IngestEvent]) -> list[IngestEvent]:
    out: list[IngestEvent] = []
    for ev in sorted(events, key=lambda e: (e.partition, e.offset)):
        if all(o.key != ev.key for o in out):
            out.append(ev)
    return out


@pytest.mark.parametrize("round_", range(200))
def test_dedupe_in_order_keeps_each_first_copy_in_ledger_order(round_: int) -> None:
    rng = random.Random(round_)
    sites = [uuid.uuid4() for _ in range(2)]
    n = rng.randrange(0, 60)
    ids = rng.choice([n, max(1, n // 3)])  # as many ids as events (no copy, mostly), or fewer
    slots = rng.sample([(p, o) for p in range(3) for o in range(100)], n)
    events = [event(rng.choice(sites), f"e{rng.randrange(ids)}", p, o) for p, o in slots]
    got = dedupe_in_order(events)
    assert [id(e) for e in got] == [id(e) for e in reference(events)]
