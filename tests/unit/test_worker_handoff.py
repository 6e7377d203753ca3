"""The hand-off of fetched records to the ledger loop (services/opsmantik/worker/handoff.py and
BatchConsumer.hand_over in faust_overrides.py), driven without a broker: a fake log stands in for
aiokafka's fetch position and seek. Whatever path a fetch takes (a paused partition skipped, a
hand-over abandoned mid-fetch), no offset is acked, or committed, that the ledger did not write."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from faust.types import TP
from opsmantik.config import Settings
from opsmantik.worker.app import build_app
from opsmantik.worker.faust_overrides import BatchConsumer
from opsmantik.worker.handoff import cut_batches

P0, P1 = TP("t", 0), TP("t", 1)


@dataclass(frozen=True)
class Rec:
    offset: int
    value: bytes = b"{}"
    partition: int = 0


@dataclass
class Log:
    """Per partition the offsets the log holds (missing ones are log gaps) and aiokafka's fetch
    position, which a fetch moves past what it returned and a seek sets."""

    offsets: dict[TP, list[int]]
    position: dict[TP, int] = field(default_factory=dict)

    def fetch(self, per_partition: int, only: set[TP] | None = None) -> dict[TP, list[Rec]]:
        out = {}
        for tp, offsets in self.offsets.items():
            if only is not None and tp not in only:
                continue
            recs = [Rec(o) for o in offsets if o >= self.position.get(tp, 0)][:per_partition]
            if recs:
                out[tp] = recs
                self.position[tp] = recs[-1].offset + 1
        return out

    async def seek(self, tp: TP, offset: int) -> None:
        self.position[tp] = offset


@dataclass
class Ledger:
    """The ledger loop's side: writes what is queued, acks it, and Faust's commit."""

    consumer: BatchConsumer
    log: Log
    written: dict[TP, set[int]] = field(default_factory=lambda: {P0: set(), P1: set()})
    ever_acked: dict[TP, set[int]] = field(default_factory=lambda: {P0: set(), P1: set()})
    broker: dict[TP, int] = field(default_factory=dict)  # the group's committed offsets (the broker's)

    def write_and_ack(self) -> None:
        queue = self.consumer.batches
        assert queue is not None
        while not queue.empty():
            batch = queue.get_nowait()
            self.written[batch.tp].update(r.offset for r in batch.records)
            self.consumer.ack_batch(batch)
        for tp in self.written:
            self.ever_acked[tp].update(self.consumer._acked[tp])

    def commit(self) -> None:
        """As Faust's commit handler: the guard's offset, then remembered as committed."""
        for tp in self.written:
            offset = self.consumer._new_offset(tp)
            if offset is not None:
                self.consumer._committed_offset[tp] = self.broker[tp] = offset

    async def seek_to_committed(self) -> dict[TP, int]:  # aiokafka's, for Faust's perform_seek
        for tp in self.written:
            self.log.position[tp] = self.broker.get(tp, 0)
        return {tp: self.broker.get(tp, 0) for tp in self.written}

    def revoke(self) -> None:
        """A rebalance begins: what Faust's and the guard's revocation hooks do to the consumer's
        state, and the flow stops (the generation id changes only at the next assignment)."""
        c = self.consumer
        c._revoked_generation = c.app.consumer_generation_id
        for tp in self.written:
            for kept in (
                c._gap,
                c._acked,
                c._acked_index,
                c._read_offset,
                c._committed_offset,
                c._first_delivered,
            ):
                kept.pop(tp, None)
        c.stop_flow()

    async def assign(self) -> None:
        """The next generation: aiokafka restarts every partition at its committed offset, Faust
        seeks there (Recovery._resume_streams: perform_seek) and resumes the flow."""
        c = self.consumer
        c.app.consumer_generation_id += 1
        for tp in self.written:
            c._first_delivered.pop(tp, None)
        await c.perform_seek()
        c.resume_flow()

    def assert_nothing_acked_unwritten(self) -> None:
        for tp, offsets in self.log.offsets.items():
            gaps = set(range(max(offsets) + 1)) - set(offsets)
            assert self.ever_acked[tp] <= self.written[tp] | gaps, tp
            committed = max(self.consumer._committed_offset[tp] or 0, self.broker.get(tp, 0))
            assert set(range(committed)) <= self.written[tp] | gaps, tp

    def assert_all_written_and_committed(self) -> None:
        for tp, offsets in self.log.offsets.items():
            assert self.written[tp] == set(offsets), tp
            assert self.consumer._committed_offset[tp] == max(offsets) + 1, tp


@pytest.fixture
async def consumer(tmp_path: Path) -> AsyncIterator[BatchConsumer]:
    app = build_app(Settings(kafka_bootstrap="127.0.0.1:1", worker_group="unit-handoff"), None, tmp_path)  # type: ignore[arg-type]
    c = app.consumer
    assert isinstance(c, BatchConsumer)
    c.resume_flow()  # as after the first assignment
    yield c


def setup(consumer: BatchConsumer, queue_size: int) -> Ledger:
    log = Log({P0: list(range(12)), P1: [0, 1, 2, 3, 4, 5, 8, 9, 10, 11]})  # P1: 6, 7 a log gap
    ledger = Ledger(consumer, log)
    consumer.batches = asyncio.Queue(queue_size)
    consumer._seek = log.seek  # type: ignore[method-assign]
    consumer.seek_to_committed = ledger.seek_to_committed  # type: ignore[method-assign]
    return ledger


async def drain_rest(consumer: BatchConsumer, ledger: Ledger) -> None:
    generation = consumer.app.consumer_generation_id
    for _ in range(10):
        await consumer.hand_over(ledger.log.fetch(4), None, generation)
        ledger.write_and_ack()
        ledger.commit()


def test_cut_batches_starts_at_the_read_offset_and_drops_what_was_handed_over() -> None:
    fetched = {P0: [Rec(3), Rec(4), Rec(5)], P1: [Rec(9)]}
    batches = cut_batches(fetched, 7, {P0: 4, P1: 6})
    assert [(b.tp, b.start, [r.offset for r in b.records]) for b in batches] == [
        (P0, 4, [4, 5]),  # 3 was handed over before
        (P1, 6, [9]),  # 6..8 held no record: the batch covers them
    ]
    assert [b.start for b in cut_batches({P0: [Rec(3)]}, 7, {})] == [3]  # nothing handed over yet
    assert cut_batches({P0: [Rec(3)]}, 7, {P0: 4}) == []


async def test_a_paused_partition_is_sought_back_and_nothing_unwritten_is_acked(
    consumer: BatchConsumer,
) -> None:
    ledger = setup(consumer, queue_size=8)
    generation = consumer.app.consumer_generation_id
    for active in ({P0, P1}, {P0}, {P0, P1}):  # P1 paused for the second fetch: its records skipped
        await consumer.hand_over(ledger.log.fetch(4), active, generation)
        ledger.write_and_ack()
        ledger.commit()
        ledger.assert_nothing_acked_unwritten()
    await drain_rest(consumer, ledger)
    ledger.assert_nothing_acked_unwritten()
    ledger.assert_all_written_and_committed()


async def test_a_hand_over_abandoned_mid_fetch_puts_the_rest_back(consumer: BatchConsumer) -> None:
    ledger = setup(consumer, queue_size=1)
    generation = consumer.app.consumer_generation_id
    for only in ({P0}, {P1}):  # 0..3 of each partition written, acked and committed
        await consumer.hand_over(ledger.log.fetch(4, only), None, generation)
        ledger.write_and_ack()
    ledger.commit()
    # P0's batch fills the queue, P1's waits for room; the flow stops (a rebalance begins) and
    # the wait is abandoned: P1's fetched records are not handed over.
    handing = asyncio.ensure_future(consumer.hand_over(ledger.log.fetch(4), None, generation))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not handing.done()
    consumer.stop_flow()
    await handing
    consumer.resume_flow()  # and nothing else: no rebalance seek the hand-off could rely on
    ledger.write_and_ack()
    ledger.commit()
    ledger.assert_nothing_acked_unwritten()
    consumer.batches = asyncio.Queue(8)  # the ledger loop keeps up from here on
    await drain_rest(consumer, ledger)
    ledger.assert_nothing_acked_unwritten()
    ledger.assert_all_written_and_committed()


async def test_a_rebalance_completed_during_the_fetch_puts_the_new_generations_records_back(
    consumer: BatchConsumer,
) -> None:
    """The broker paused past the session timeout (tests/integration/test_worker_broker_pause.py):
    the group is rejoined while a fetch waits, so the fetch, begun in the old generation, returns
    the records the new assignment starts with (at the committed offsets). They are not handed
    over (stale), and were dropped with the fetch position past them: the next batch started
    after them, the guard's base (the first offset handed over) with it, and the commit moved
    over records never ledgered."""
    ledger = setup(consumer, queue_size=8)
    for only in ({P0}, {P1}):  # 0..3 of each partition written, acked and committed
        await consumer.hand_over(ledger.log.fetch(4, only), None, consumer.app.consumer_generation_id)
        ledger.write_and_ack()
    ledger.commit()
    generation = consumer.app.consumer_generation_id  # read before the fetch
    ledger.revoke()
    await ledger.assign()  # the rebalance completes while the fetch waits ...
    await consumer.hand_over(ledger.log.fetch(4), None, generation)  # ... which returns 4..7
    ledger.write_and_ack()
    ledger.commit()
    await drain_rest(consumer, ledger)
    ledger.assert_nothing_acked_unwritten()
    ledger.assert_all_written_and_committed()


async def test_a_batch_of_a_revoked_generation_is_not_acked_before_the_next_assignment(
    consumer: BatchConsumer,
) -> None:
    """The ledger loop finishes a batch after the revocation and before the next assignment (the
    generation id has not changed yet): Faust just dropped the partition's acks, the ack must not
    put the old generation's offsets back among them."""
    ledger = setup(consumer, queue_size=8)
    await consumer.hand_over(ledger.log.fetch(4), None, consumer.app.consumer_generation_id)
    ledger.revoke()
    ledger.write_and_ack()  # the batches were taken before the revocation, finished after it
    assert not consumer._acked[P0] and not consumer._acked[P1]
    await ledger.assign()
    await drain_rest(consumer, ledger)
    ledger.assert_nothing_acked_unwritten()
    ledger.assert_all_written_and_committed()
