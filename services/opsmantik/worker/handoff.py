"""The hand-off of one fetch to the ledger loop, as data: no Faust, no broker.

Invariant (issue 30): every fetched record is handed over in a `Batch`, or its partition is sought
back to the first record not handed over before its next batch. A batch's `start` covers, below
its first record, only offsets that were not fetched at all (log gaps: control records,
compaction), never records that were fetched and dropped. `faust_overrides.BatchConsumer` does
the I/O (the queue, the seek); the cutting is here, where a unit test reaches it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from faust.types import TP


@dataclass(frozen=True)
class Batch:
    """The records of one partition from one fetch. `start` may be below the first record's
    offset: offsets the log does not hold (no record was fetched there) belong to the batch that
    follows them, so acking the batch leaves no hole for the commit guard to wait on."""

    generation: int
    tp: TP
    start: int
    records: Sequence[Any]  # aiokafka ConsumerRecord: .value, .partition, .offset

    @property
    def last(self) -> int:
        return int(self.records[-1].offset)


def cut_batches(
    fetched: Mapping[TP, Sequence[Any]], generation: int, read_offset: Mapping[TP, int | None]
) -> list[Batch]:
    """One batch per partition of the fetch, in fetch order, without the records already handed
    over. `read_offset[tp]` is the first offset not handed over yet (None: nothing handed over
    since the partition was assigned or sought): the batch starts there, so it covers only the
    offsets between it and the first record, which the fetch did not return."""
    batches = []
    for tp, records in fetched.items():
        nxt = read_offset.get(tp)
        if nxt is not None and records and records[0].offset < nxt:
            records = [r for r in records if r.offset >= nxt]  # handed over by an earlier batch
        if records:
            batches.append(Batch(generation, tp, records[0].offset if nxt is None else nxt, records))
    return batches
