"""Everything the worker overrides in Faust (faust-streaming 0.15.3, pinned in pyproject.toml).

Faust stays the stream framework: group membership, fetching, rebalances, the commit timer. The
worker changes two things, both through Faust's private consumer internals, so they all live
here and tests/unit/test_worker_faust_overrides.py fails when the pinned version stops behaving as
assumed (version, attributes, signatures, the source of the methods copied or replaced).

1. The commit guard (`GuardedConsumer._new_offset`). Faust computes the offset to commit from
   the acked offsets of a partition and treats a hole at their head as blocking only when it is
   wider than one offset, and not at all when the committed offset is 0 or unknown
   (faust-streaming issue #606; proposed fix PR #707): one unacked batch followed by acked ones
   is committed past and never seen again. The guard checks the head exactly: the commit moves
   only over a run of acked offsets that starts at the partition's base (the committed offset,
   or the first offset handed over since assignment when nothing is committed yet or retention
   moved the log start past it). Hooks: `track_message`, `on_partitions_revoked`,
   `on_partitions_assigned`, `seek` keep that base.
2. The batch hand-off (`BatchConsumer._drain_messages`, issue 10). Faust's loop hands every
   message to the conductor through `wait_first(callback(message), suspend_flow.wait())`:
   ≈50 µs of CPU each (docs/benchmarks.md). Here one `Batch` per partition fetch goes on
   `batches`, the ledger loop acks it by offset range (`ack_batch`) after its transaction and
   publish, and Faust's commit handler commits the acked prefix through the guard. Kept from
   Faust: the fetch (`_wait_next_records`), the flow / generation checks and the seek back to
   the committed offsets when the flow is stopped. Fetched records never handed over are put
   back (`_put_back`): see opsmantik.worker.handoff for the invariant.

`GuardedTransport` / `BatchTransport` install the consumers (`LedgerApp._new_transport`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from time import monotonic
from typing import Any

from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, Message
from faust.utils.functional import consecutive_numbers

from opsmantik.worker.handoff import Batch, cut_batches

FAUST_VERSION = "0.15.3"  # the version every override here was written against


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


class BatchConsumer(GuardedConsumer):
    """The guarded consumer with a batch hand-off instead of Faust's per-message delivery."""

    batches: asyncio.Queue[Batch] | None = None  # set by LedgerApp._new_consumer
    _revoked_generation: int | None = None  # the generation whose partitions were revoked last

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        # The generation id changes only when the next assignment arrives; from the revocation
        # on, nothing of the ending generation is acked (Faust has just dropped its acks).
        self._revoked_generation = self.app.consumer_generation_id
        await super().on_partitions_revoked(revoked)

    def ack_batch(self, batch: Batch) -> bool:
        """Mark batch.start..batch.last acked. A batch fetched before a rebalance (of a
        generation that was revoked, even while the next assignment is still on its way) is not
        acked: the partitions restart at their committed offsets and it is read again."""
        if (
            batch.generation != self.app.consumer_generation_id
            or batch.generation == self._revoked_generation
        ):
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

    def _current(self, generation: int) -> bool:
        return self.flow_active and self.app.consumer_generation_id == generation

    def _takes(self, tp: TP, active: set[TP] | None) -> bool:
        """Faust's getmany delivers only the active (not paused) and buffered partitions."""
        return active is None or tp in active or tp in self._buffered_partitions

    async def _put(self, batch: Batch) -> bool:
        """Queue `batch` with at most one wait, abandoned when a rebalance stops the flow."""
        queue = self.batches
        assert queue is not None, "BatchConsumer needs its queue (LedgerApp sets it)"
        if not queue.full():
            queue.put_nowait(batch)
            return True
        put = asyncio.ensure_future(queue.put(batch))
        await self.wait_first(put, self.suspend_flow.wait())
        if put.done() and not put.cancelled():
            return True
        put.cancel()
        return False

    async def hand_over(
        self, fetched: Mapping[TP, Sequence[Any]], active: set[TP] | None, generation: int
    ) -> None:
        """One fetch: every record goes on the queue in a batch, or its partition is put back."""
        held: list[Batch] = []
        pending = cut_batches(fetched, generation, self._read_offset)
        for i, batch in enumerate(pending):
            if not self._current(generation):
                held.extend(pending[i:])  # a rebalance began: hand nothing more over
                break
            if not self._takes(batch.tp, active):
                held.append(batch)  # a paused partition
                continue
            self.note_delivered(batch.tp, batch.start)
            if not await self._put(batch):
                held.extend(pending[i:])
                break
            if self.app.consumer_generation_id == generation:
                self._read_offset[batch.tp] = batch.last + 1
            # else a rebalance while waiting: ack_batch refuses the batch, and _read_offset stays
            # as the rebalance left it (the partition restarts at its committed offset)
            self.app.monitor.stream_inbound_time[batch.tp] = monotonic()  # Faust's livelock check
        await self._put_back(held, generation)

    async def _put_back(self, held: Sequence[Batch], generation: int) -> None:
        """Partitions fetched but not handed over: their next batch starts at the first record
        not handed over. First their read offset is dropped, so that whatever happens next
        their next batch starts at its own first record and covers nothing below it; then they
        are sought back, so those records are fetched again."""
        for b in held:
            self._read_offset.pop(b.tp, None)
        if not held:
            return
        if not self.flow_active or self.app.consumer_generation_id != generation:
            # A rebalance. If it completed during the fetch, the fetch already read from the new
            # assignment's committed offsets and the records dropped here are the new
            # generation's first: every partition goes back to its committed offset (as Faust's
            # getmany does when the flow is stopped), whatever the rebalance did before.
            await self._seek_to_committed()
            return
        for b in held:
            try:
                await self._seek(b.tp, b.start)  # Faust's primitive: no reset of the guard's base
            except Exception as exc:  # the commit guard holds the commit below the records
                self.log.warning("could not seek %r back to %d: %r", b.tp, b.start, exc)
            else:
                self._read_offset[b.tp] = b.start

    async def _seek_to_committed(self) -> None:
        """Faust's perform_seek, retried until it worked, the consumer stops, or a newer
        assignment arrived (aiokafka starts newly assigned partitions at their committed
        offsets). Records fetched and not handed over are behind the fetch position: the fetch
        must not go on from there."""
        generation = self.app.consumer_generation_id
        delay = 0.1
        while True:
            try:
                await self.perform_seek()
                return
            except Exception as exc:
                self.log.warning(
                    "could not seek to the committed offsets (%r); retrying in %.1fs", exc, delay
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
            if self.should_stop or self.app.consumer_generation_id != generation:
                return

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - needs a broker
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                self.diag.set_flag(CONSUMER_FETCHING)
                # Read before the fetch: a rebalance during it makes the whole fetch stale.
                generation = self.app.consumer_generation_id
                records, active = await self._wait_next_records(1.0)
                await asyncio.sleep(0)  # a fetch that returns at once must not starve the loop
                if records and not self.should_stop:
                    # With the flow stopped nothing is handed over and all is sought back.
                    await self.hand_over(records, active, generation)
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
