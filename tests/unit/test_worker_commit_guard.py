"""The commit guard (services/opsmantik/worker/faust_overrides.py) against Faust 0.15.3's own `_new_offset`:
the same acked offsets, the bookkeeping Faust keeps per partition, no broker."""

from __future__ import annotations

from collections import defaultdict

import pytest
from faust.transport.consumer import Consumer as FaustConsumer
from faust.types import TP
from intervaltree import IntervalTree
from opsmantik.worker.faust_overrides import GuardedConsumer

TP0 = TP("ingest", 0)


def consumer(acked: list[int], committed: int | None, first_delivered: int | None) -> GuardedConsumer:
    c = GuardedConsumer.__new__(GuardedConsumer)  # only the bookkeeping _new_offset reads
    c._acked = defaultdict(list, {TP0: list(acked)})
    c._acked_index = defaultdict(set, {TP0: set(acked)})
    c._gap = defaultdict(IntervalTree)
    c._committed_offset = defaultdict(lambda: None, {TP0: committed})
    c._first_delivered = {} if first_delivered is None else {TP0: first_delivered}
    return c


@pytest.mark.parametrize(
    ("acked", "committed", "first"),
    [
        ([1, 2, 3, 4, 5, 6], None, 0),  # never committed; message 0's batch raised
        ([11, 12, 13], 10, 10),  # one unacked message at the committed offset (#606)
        ([1, 2], None, 0),  # committed 0 is stored as None by Faust
    ],
)
def test_a_hole_at_the_head_blocks_the_commit(acked: list[int], committed: int | None, first: int) -> None:
    # Faust's own method commits past the unfinished message ...
    assert FaustConsumer._new_offset(consumer(acked, committed, first), TP0) == acked[-1] + 1
    # ... the guard does not.
    assert consumer(acked, committed, first)._new_offset(TP0) is None


def test_a_finished_run_from_the_base_is_committed_up_to_the_first_hole() -> None:
    c = consumer([10, 11, 12, 14, 15], committed=10, first_delivered=10)
    assert c._new_offset(TP0) == 13
    assert c._acked[TP0] == [14, 15]
    assert c._new_offset(TP0) is None  # 13 still unfinished


def test_the_log_start_past_the_committed_offset_is_the_base() -> None:
    # retention removed 5..19: the first message delivered after assignment is 20
    assert consumer([20, 21], committed=5, first_delivered=20)._new_offset(TP0) == 22


def test_offsets_absent_from_the_log_are_not_holes() -> None:
    c = consumer([10, 11, 15], committed=10, first_delivered=10)
    c._gap[TP0].addi(12, 15)  # 12..14 are not in the log (control records, compaction)
    assert c._new_offset(TP0) == 16
