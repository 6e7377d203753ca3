"""The gateway's adaptive linger (services/opsmantik/gateway/produce_batch.py), on a fake producer."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from opsmantik.gateway.produce_batch import ProduceBatcher
from opsmantik.kafka.producer import Delivery


class FakeProducer:
    """Each produce() is one batch; the test settles its reports when it wants."""

    def __init__(self, fail: BaseException | None = None) -> None:
        self.batches: list[tuple[list[bytes], Delivery]] = []
        self.fail = fail

    def produce(self, keys: Sequence[bytes], values: Sequence[bytes]) -> Delivery:
        if self.fail is not None:
            raise self.fail
        d = Delivery(len(values), asyncio.get_running_loop().create_future())
        self.batches.append((list(values), d))
        return d

    def land(self, n: int) -> None:
        values, d = self.batches[n]
        for i in range(len(values)):
            d.settle(i, None, 0, 100 * n + i)


async def _spin(times: int = 3) -> None:
    for _ in range(times):
        await asyncio.sleep(0)


async def test_idle_request_is_produced_in_the_same_loop_iteration() -> None:
    fake = FakeProducer()
    b = ProduceBatcher(fake.produce, deadline_s=5.0, max_linger_s=10.0)
    task = asyncio.ensure_future(b.submit([b"k"], [b"a"]))
    await _spin()
    assert [v for v, _ in fake.batches] == [[b"a"]]  # no linger when nothing is in flight
    fake.land(0)
    assert await task == [(0, 0)]
    assert b.inflight == 0


async def test_requests_of_one_iteration_share_a_batch_and_get_their_own_slice() -> None:
    fake = FakeProducer()
    b = ProduceBatcher(fake.produce, deadline_s=5.0)
    t1 = asyncio.ensure_future(b.submit([b"k", b"k"], [b"a", b"b"]))
    t2 = asyncio.ensure_future(b.submit([b"k"], [b"c"]))
    await _spin()
    assert [v for v, _ in fake.batches] == [[b"a", b"b", b"c"]]
    fake.land(0)
    assert await t1 == [(0, 0), (0, 1)]
    assert await t2 == [(0, 2)]


async def test_under_load_requests_linger_until_the_inflight_batch_lands() -> None:
    fake = FakeProducer()
    b = ProduceBatcher(fake.produce, deadline_s=5.0, max_inflight=1, max_linger_s=10.0)
    first = asyncio.ensure_future(b.submit([b"k"], [b"a"]))
    await _spin()
    later = [asyncio.ensure_future(b.submit([b"k"], [v])) for v in (b"b", b"c")]
    await _spin()
    assert len(fake.batches) == 1  # b and c wait: one batch is in flight
    fake.land(0)
    await first
    await _spin()
    assert [v for v, _ in fake.batches] == [[b"a"], [b"b", b"c"]]  # together, once it landed
    fake.land(1)
    assert [await t for t in later] == [[(0, 100)], [(0, 101)]]


async def test_linger_is_bounded_when_the_inflight_batch_does_not_land() -> None:
    fake = FakeProducer()
    b = ProduceBatcher(fake.produce, deadline_s=5.0, max_inflight=1, max_linger_s=0.01)
    asyncio.ensure_future(b.submit([b"k"], [b"a"]))
    await _spin()
    asyncio.ensure_future(b.submit([b"k"], [b"b"]))
    await asyncio.sleep(0.05)
    assert [v for v, _ in fake.batches] == [[b"a"], [b"b"]]


async def test_deadline_releases_the_batch_with_what_is_known() -> None:
    fake = FakeProducer()
    b = ProduceBatcher(fake.produce, deadline_s=0.05)
    task = asyncio.ensure_future(b.submit([b"k", b"k"], [b"a", b"b"]))
    await _spin()
    fake.batches[0][1].settle(0, None, 0, 7)
    assert await asyncio.wait_for(task, 1.0) == [(0, 7), None]
    assert b.inflight == 0  # the slot is free again: the next request is not held behind it
    fake.batches[0][1].settle(1, None, 0, 8)  # a late report changes nothing already answered


async def test_produce_errors_reach_every_request_of_the_batch() -> None:
    fake = FakeProducer(fail=BufferError("queue full"))
    b = ProduceBatcher(fake.produce, deadline_s=5.0)
    t1 = asyncio.ensure_future(b.submit([b"k"], [b"a"]))
    t2 = asyncio.ensure_future(b.submit([b"k"], [b"b"]))
    for t in (t1, t2):
        with pytest.raises(BufferError):
            await t


async def test_a_batch_at_max_batch_is_produced_at_once() -> None:
    fake = FakeProducer()
    b = ProduceBatcher(fake.produce, deadline_s=5.0, max_inflight=1, max_linger_s=10.0, max_batch=3)
    asyncio.ensure_future(b.submit([b"k"], [b"a"]))
    await _spin()
    asyncio.ensure_future(b.submit([b"k"] * 3, [b"b", b"c", b"d"]))
    await _spin()
    assert [v for v, _ in fake.batches] == [[b"a"], [b"b", b"c", b"d"]]


async def test_a_request_of_many_events_is_a_batch_of_its_own() -> None:
    fake = FakeProducer()
    b = ProduceBatcher(fake.produce, deadline_s=5.0, max_shared=2)
    small = asyncio.ensure_future(b.submit([b"k"], [b"a"]))
    big = asyncio.ensure_future(b.submit([b"k"] * 3, [b"b", b"c", b"d"]))
    await _spin()
    assert sorted(v for v, _ in fake.batches) == [[b"a"], [b"b", b"c", b"d"]]
    big_n = next(i for i, (v, _) in enumerate(fake.batches) if len(v) == 3)
    fake.land(big_n)  # the big request's own messages: it does not wait for the small one
    assert await asyncio.wait_for(big, 1.0) == [(0, 100 * big_n + i) for i in range(3)]
    assert not small.done()


async def test_a_request_of_many_events_reads_its_results_at_its_deadline() -> None:
    fake = FakeProducer()
    b = ProduceBatcher(fake.produce, deadline_s=0.05, max_shared=1)
    task = asyncio.ensure_future(b.submit([b"k", b"k"], [b"a", b"b"]))
    await _spin()
    fake.batches[0][1].settle(1, None, 0, 9)
    assert await asyncio.wait_for(task, 1.0) == [None, (0, 9)]


async def test_a_deadline_serves_the_reports_already_in_before_reading() -> None:
    fake = FakeProducer()
    served: list[int] = []

    def serve() -> None:  # what the gateway's poll(0) does: the report was in librdkafka's queue
        served.append(1)
        fake.batches[-1][1].settle(0, None, 0, 11)

    b = ProduceBatcher(fake.produce, deadline_s=0.05, serve=serve)
    task = asyncio.ensure_future(b.submit([b"k", b"k"], [b"a", b"b"]))
    assert await asyncio.wait_for(task, 1.0) == [(0, 11), None]
    alone = ProduceBatcher(fake.produce, deadline_s=0.05, max_shared=1, serve=serve)
    task = asyncio.ensure_future(alone.submit([b"k", b"k"], [b"c", b"d"]))
    assert await asyncio.wait_for(task, 1.0) == [(0, 11), None]
    assert served == [1, 1]
