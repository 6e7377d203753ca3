"""Faust's aiokafka consumer with a commit guard: never commit past an unfinished message.

faust-streaming 0.15.3 (pinned in pyproject.toml) computes the offset to commit in
`Consumer._new_offset` from the acked offsets of a partition. It treats a hole at the head of
that list as blocking only when it is wider than one offset, and not at all when the committed
offset is 0 or unknown (faust-streaming issue #606; proposed fix PR #707). So one unacked
message — a batch whose handler raised — followed by acked ones is committed past and never
seen again. Here the head is checked exactly: the commit moves only over a run of acked
offsets that starts at the partition's base (the committed offset, or the first offset
delivered since the partition was assigned when nothing is committed yet or retention moved
the log start past it). Everything else is Faust's own code path.
"""

from __future__ import annotations

from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, Message
from faust.utils.functional import consecutive_numbers


class GuardedConsumer(faust_aiokafka.Consumer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._first_delivered: dict[TP, int] = {}

    def note_delivered(self, tp: TP, offset: int) -> None:
        """The first offset handed to the agent since the partition was (re)assigned."""
        self._first_delivered.setdefault(tp, offset)

    def track_message(self, message: Message) -> None:
        self.note_delivered(message.tp, message.offset)
        super().track_message(message)

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        for tp in revoked:
            self._first_delivered.pop(tp, None)
        await super().on_partitions_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TP], generation_id: int = 0) -> None:
        for tp in assigned:  # it reads again from the committed offset
            self._first_delivered.pop(tp, None)
        await super().on_partitions_assigned(assigned, generation_id)

    async def seek(self, partition: TP, offset: int) -> None:
        self._first_delivered.pop(partition, None)
        await super().seek(partition, offset)

    def _base_offset(self, tp: TP) -> int | None:
        """The first offset of `tp` that is not committed yet (None: nothing delivered)."""
        first = self._first_delivered.get(tp)
        committed = self._committed_offset[tp]  # Faust stores a committed 0 as None
        if first is None:
            return committed
        return first if committed is None else max(committed, first)

    def _new_offset(self, tp: TP) -> int | None:
        acked = self._acked[tp]
        if not acked:
            return None
        gaps = self._gap[tp]  # offsets absent from the log (compaction, control records)
        if gaps:
            top = max(acked)
            spans = sorted(gaps.overlap(0, top), key=lambda iv: iv.begin)
            if spans:
                filled = [o for iv in spans for o in range(iv.begin, iv.end)]
                acked.extend(filled)
                gaps.chop(0, max(filled[-1], top + 1))
        acked.sort()
        base = self._base_offset(tp)
        if base is not None and acked[0] > base:
            return None  # the message at `base` is not finished: commit nothing past it
        run = next(consecutive_numbers(acked))
        acked[: len(run)] = []
        self._acked_index[tp].difference_update(run)
        return run[-1] + 1


class GuardedTransport(faust_aiokafka.Transport):
    Consumer = GuardedConsumer
