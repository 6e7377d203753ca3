"""The worker's Faust consumer: acks by offset range and the commit guard
(services/opsmantik/worker/faust_overrides.py). Pure bookkeeping, no broker: the consumer is built but never
started."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from faust.types import TP
from opsmantik.config import Settings
from opsmantik.worker.app import build_app
from opsmantik.worker.faust_overrides import BatchConsumer
from opsmantik.worker.handoff import Batch

T = TP("t", 0)


@dataclass(frozen=True)
class Rec:
    offset: int
    value: bytes = b"{}"
    partition: int = 0


@pytest.fixture
def consumer(tmp_path: Path) -> Iterator[BatchConsumer]:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    app = build_app(Settings(kafka_bootstrap="127.0.0.1:1", worker_group="unit-consumer"), None, tmp_path)  # type: ignore[arg-type]
    c = app.consumer
    assert isinstance(c, BatchConsumer)
    yield c
    asyncio.set_event_loop(None)
    loop.close()


def batch(c: BatchConsumer, first: int, last: int, start: int | None = None) -> Batch:
    b = Batch(
        c.app.consumer_generation_id,
        T,
        first if start is None else start,
        [Rec(o) for o in range(first, last + 1)],
    )
    c.note_delivered(T, b.start)  # as _drain_messages does at hand-over
    return b


def test_acked_batches_commit_in_order(consumer: BatchConsumer) -> None:
    consumer._committed_offset[T] = 100
    a, b = batch(consumer, 100, 199), batch(consumer, 200, 299)
    assert consumer.ack_batch(a) and consumer.ack_batch(b)
    assert consumer._new_offset(T) == 300
    assert consumer._new_offset(T) is None  # nothing left to commit


def test_never_commits_past_an_unfinished_single_message_batch(consumer: BatchConsumer) -> None:
    """faust-streaming #606: Faust's _new_offset commits 107 here, skipping offset 100."""
    consumer._committed_offset[T] = 100
    stuck, later = batch(consumer, 100, 100), batch(consumer, 101, 106)
    consumer.ack_batch(later)
    assert consumer._new_offset(T) is None
    consumer.ack_batch(stuck)
    assert consumer._new_offset(T) == 107


def test_never_commits_past_an_unfinished_first_batch_of_a_new_partition(consumer: BatchConsumer) -> None:
    """No committed offset yet (Faust keeps None for it, also for 0): the first offset handed
    over is the base; Faust's _new_offset skips its check in this case."""
    first, second = batch(consumer, 0, 9), batch(consumer, 10, 19)
    consumer.ack_batch(second)
    assert consumer._new_offset(T) is None
    consumer.ack_batch(first)
    assert consumer._new_offset(T) == 20


def test_a_batch_covers_the_offsets_the_fetch_skipped(consumer: BatchConsumer) -> None:
    consumer._committed_offset[T] = 5
    b = batch(consumer, 7, 9, start=5)  # 5 and 6 hold no record (e.g. a control batch)
    consumer.ack_batch(b)
    assert consumer._new_offset(T) == 10


def test_a_batch_fetched_before_a_rebalance_is_not_acked(consumer: BatchConsumer) -> None:
    consumer._committed_offset[T] = 100
    b = batch(consumer, 100, 199)
    consumer.app.consumer_generation_id += 1
    assert not consumer.ack_batch(b)
    assert consumer._new_offset(T) is None


def test_acks_below_the_committed_offset_are_dropped(consumer: BatchConsumer) -> None:
    consumer._committed_offset[T] = 100
    b = batch(consumer, 100, 149)
    consumer.ack_batch(b)
    assert consumer._new_offset(T) == 150
    consumer._committed_offset[T] = 150
    consumer._acked[T].extend([120, 121])  # a replayed batch acked late
    consumer.ack_batch(batch(consumer, 150, 160))
    # What Faust's commit handler asks every interval: never an offset below the committed one.
    got = [consumer._filter_committable_offsets([T]) for _ in range(2)]
    assert {T: 161} in got and all(g in ({}, {T: 161}) for g in got)
    assert consumer._acked[T] == []
