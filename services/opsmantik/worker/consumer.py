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

`BatchConsumer` (below) is the worker's consumer: the same guard, with one batch per partition
fetch handed to the ledger loop instead of Faust's per-message delivery (issue 10).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from time import monotonic
from typing import Any

from faust.transport.consumer import CONSUMER_FETCHING
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


# ---------------------------------------------------------------- batch hand-off (issue 10)


@dataclass(frozen=True)
class Batch:
    """The records of one partition from one fetch. `start` may be below the first record's
    offset: offsets the fetch skipped (no record there) belong to the batch that follows them,
    so acking the batch leaves no hole for the commit guard to wait on."""

    generation: int
    tp: TP
    start: int
    records: Sequence[Any]  # aiokafka ConsumerRecord: .value, .partition, .offset

    @property
    def last(self) -> int:
        return int(self.records[-1].offset)


class BatchConsumer(GuardedConsumer):
    """The guarded consumer with a batch hand-off instead of Faust's per-message delivery.

    Faust's `_drain_messages` (faust/transport/consumer.py, 0.15.3) awaits
    `wait_first(callback(message), suspend_flow.wait())` for every message, then the conductor,
    a channel queue and the stream run per message: ≈50 µs of CPU each (docs/benchmarks.md).
    Here one batch per partition fetch goes on `batches` (a small queue the ledger loop reads),
    with at most one wait per batch, and the ledger loop acks it by offset range (`ack_batch`)
    after its Postgres COMMIT and billable publish; Faust's `_commit_handler` then commits the
    acked prefix through the guard's `_new_offset`. The flow / generation / seek checks of
    Faust's `getmany` are kept."""

    batches: asyncio.Queue[Batch] | None = None  # set by LedgerApp._new_consumer

    def ack_batch(self, batch: Batch) -> bool:
        """Mark batch.start..batch.last acked. A batch fetched before a rebalance is not acked:
        the partitions were sought back to their committed offsets and it is read again."""
        if batch.generation != self.app.consumer_generation_id:
            return False
        tp = batch.tp
        committed = self._committed_offset[tp]
        lo = batch.start if committed is None else max(batch.start, committed)
        index = self._acked_index[tp]
        new = [o for o in range(lo, batch.last + 1) if o not in index]
        index.update(new)
        self._acked[tp].extend(new)
        self._n_acked += len(new)
        return True

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - needs a broker
        queue = self.batches
        assert queue is not None, "BatchConsumer needs its queue (LedgerApp sets it)"
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        read_offset = self._read_offset
        stream_inbound_time = self.app.monitor.stream_inbound_time
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                self.diag.set_flag(CONSUMER_FETCHING)
                records, active = await self._wait_next_records(1.0)
                await asyncio.sleep(0)  # a fetch that returns at once must not starve the loop
                if not records or self.should_stop:
                    continue
                if not self.flow_active:  # as Faust's getmany: seek back to the committed offsets
                    try:
                        await self.perform_seek()
                    except Exception as exc:
                        self.log.warning("exception performing seek when flow not active %r", exc)
                    continue
                generation = self.app.consumer_generation_id
                for tp, recs in records.items():
                    if not self.flow_active or self.app.consumer_generation_id != generation:
                        break  # rebalancing: what is not handed over is fetched again after the seek
                    if active is not None and tp not in active and tp not in self._buffered_partitions:
                        continue
                    # _read_offset: the next offset to hand over (Faust's seek sets it that way too)
                    nxt = read_offset[tp]
                    if nxt is not None and recs[0].offset < nxt:
                        recs = [r for r in recs if r.offset >= nxt]  # already handed over
                        if not recs:
                            continue
                    start = recs[0].offset if nxt is None else nxt
                    batch = Batch(generation, tp, start, recs)
                    self.note_delivered(tp, start)
                    if queue.full():  # one wait per batch, abandoned if a rebalance stops the flow
                        put = asyncio.ensure_future(queue.put(batch))
                        await self.wait_first(put, self.suspend_flow.wait())
                        if not put.done() or put.cancelled():
                            break  # not handed over: fetched again after the seek
                        if self.app.consumer_generation_id != generation:
                            # A rebalance while waiting: the seek set _read_offset to the
                            # committed offset; keep it, so the batch (not acked: old
                            # generation) is fetched and handed over again.
                            break
                    else:
                        queue.put_nowait(batch)
                    read_offset[tp] = batch.last + 1
                    stream_inbound_time[tp] = monotonic()  # else verify_event_path logs a stall
                self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)


class BatchTransport(GuardedTransport):
    Consumer = BatchConsumer
