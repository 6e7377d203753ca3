"""Faust's consumer with a batch hand-off and a strict commit guard (faust-streaming 0.15.3, pinned).

Faust stays the framework: the app, group membership, rebalances, offset commits. Two parts of
its Consumer (faust/transport/consumer.py) are replaced, both private internals of 0.15.3:

- `_drain_messages` hands **one batch per partition fetch** to the ledger loop through a small
  queue, instead of one `wait_first(callback(message), ...)` per message (two tasks, an
  `asyncio.wait` and the conductor, channel and stream per message: ≈50 µs of CPU each,
  docs/benchmarks.md). The fetch/flow/generation/seek checks of Faust's `getmany` are kept.
- `_new_offset` never returns an offset past a hole: Faust's version lets a commit jump one
  unacked offset at the committed position and skips the check for a never-committed
  partition (faust-streaming #606, fix PR #707), so a batch that crashed could be committed past.

The ledger loop acks a batch by offset range (`ack_batch`) after its Postgres COMMIT and
billable publish; Faust's own `_commit_handler` then commits the acked prefix.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from time import monotonic
from typing import Any, ClassVar, cast

from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from faust.utils.functional import consecutive_numbers


@dataclass(frozen=True)
class Batch:
    """The records of one partition from one fetch. `start` may be below the first record's
    offset: offsets the fetch skipped (no record there) belong to the batch that follows them,
    so acking the batch leaves no hole for the commit guard to wait on forever."""

    generation: int
    tp: TP
    start: int
    records: Sequence[Any]  # aiokafka ConsumerRecord: .value, .partition, .offset

    @property
    def last(self) -> int:
        return int(self.records[-1].offset)


class BatchConsumer(faust_aiokafka.Consumer):
    """Install with `install(app, queue)` before the app starts."""

    batches: asyncio.Queue[Batch] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # First offset handed over per partition while it has no committed offset: the
        # commit guard's base for a never-committed partition.
        self._origin: dict[TP, int] = {}

    # ------------------------------------------------------------ commit guard

    def _new_offset(self, tp: TP) -> int | None:
        """The offset to commit: one past the run of acked offsets that starts exactly at the
        committed offset (or at the first offset read, if none is committed); None while the
        offset at that position is unacked, however many later ones are."""
        acked = self._acked[tp]
        if not acked:
            return None
        base = self._committed_offset[tp]  # Faust keeps None for "none" and for 0
        if base is None:
            base = self._origin.get(tp)
            if base is None:
                return None
        acked.sort()
        if acked[0] < base:  # acks of offsets already committed (a replay): drop them
            stale = [o for o in acked if o < base]
            del acked[: len(stale)]
            self._acked_index[tp].difference_update(stale)
            if not acked:
                return None
        if acked[0] != base:
            return None  # the batch at `base` is not finished: never commit past it
        run = next(consecutive_numbers(acked))
        del acked[: len(run)]
        self._acked_index[tp].difference_update(run)
        return int(run[-1]) + 1

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        for tp in revoked:
            self._origin.pop(tp, None)
        await super().on_partitions_revoked(revoked)

    # ------------------------------------------------------------ acks

    def ack_batch(self, batch: Batch) -> bool:
        """Mark batch.start..batch.last acked (call after the batch is committed and published).
        A batch fetched before a rebalance is not acked: the partitions were sought back to their
        committed offsets and its records are being read again."""
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

    # ------------------------------------------------------------ fetch loop

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - needs a broker
        queue = self.batches
        assert queue is not None, "BatchConsumer: install() was not called"
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
                    if self._committed_offset[tp] is None:
                        self._origin.setdefault(tp, start)
                    batch = Batch(generation, tp, start, recs)
                    if queue.full():  # one wait per batch, abandoned if a rebalance stops the flow
                        put = asyncio.ensure_future(queue.put(batch))
                        await self.wait_first(put, self.suspend_flow.wait())
                        if not put.done() or put.cancelled():
                            break  # not handed over: fetched again after the seek
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


class BatchTransport(faust_aiokafka.Transport):
    Consumer: ClassVar[type] = BatchConsumer


def install(app: Any, queue: asyncio.Queue[Batch]) -> None:
    """Make `app` use BatchConsumer (call right after faust.App(...), before topics/agents)."""
    app.transport = BatchTransport(app.conf.broker_consumer, app)
    original = app._new_consumer

    def new_consumer() -> Any:
        consumer = original()
        cast(BatchConsumer, consumer).batches = queue
        return consumer

    app._new_consumer = new_consumer
