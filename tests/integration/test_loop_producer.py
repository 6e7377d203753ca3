"""The gateway's producer polled from the event loop (kafka/producer.py `LoopPolledProducer`, issue
28), against the real broker: reports settle on the loop's thread with no poll thread, an idle
producer serves a new report at its busy tick (not its idle one), and close() hands the reports it
flushed in a thread to the loop."""

from __future__ import annotations

import asyncio
import threading

import pytest
from confluent_kafka import KafkaError
from opsmantik.config import Settings
from opsmantik.gateway.publisher import producer_settings
from opsmantik.kafka.producer import Delivery, LoopPolledProducer

pytestmark = pytest.mark.integration


class Recorded(Delivery):
    """A Delivery that notes the thread each report settled on."""

    __slots__ = ("threads",)

    def __init__(self, n: int, future: asyncio.Future[list[object]]) -> None:
        super().__init__(n, future)  # type: ignore[arg-type]
        self.threads: set[int] = set()

    def settle(self, i: int, err: KafkaError | None, partition: int = -1, offset: int = -1) -> None:
        self.threads.add(threading.get_ident())
        super().settle(i, err, partition, offset)


def produce(p: LoopPolledProducer, topic: str, n: int) -> Recorded:
    d = Recorded(n, asyncio.get_running_loop().create_future())
    for i in range(n):
        p.producer.produce(topic, b"{}", b"loop-producer-test", on_delivery=p.reporter(d, i))
    p.produced()
    return d


async def test_reports_settle_on_the_loop_thread_without_a_poll_thread(settings: Settings) -> None:
    before = {t.ident for t in threading.enumerate()}
    p = LoopPolledProducer(producer_settings(settings))
    p.start(asyncio.get_running_loop())
    try:
        d = produce(p, settings.topic, 20)
        results = await asyncio.wait_for(d.future, 10)
        assert all(isinstance(r, tuple) and r[1] >= 0 for r in results), results
        assert d.threads == {threading.get_ident()}  # every report settled on the loop's thread
        assert {t.ident for t in threading.enumerate()} <= before  # no Python thread of its own
    finally:
        p.stop()
        await asyncio.to_thread(p.close, 5.0)


async def test_an_idle_producer_serves_a_new_report_at_its_busy_tick(settings: Settings) -> None:
    p = LoopPolledProducer(producer_settings(settings), busy_s=0.001, idle_s=60.0)
    p.start(asyncio.get_running_loop())
    try:
        await asyncio.sleep(0.05)  # idle: the next tick is a minute away
        d = produce(p, settings.topic, 1)
        [result] = await asyncio.wait_for(d.future, 10)  # served by a busy tick, not in 60 s
        assert isinstance(result, tuple)
        await asyncio.sleep(0.1)
        polls = p.polls
        await asyncio.sleep(0.2)
        assert p.polls == polls  # nothing outstanding: back to the idle tick, no 1 ms polling
    finally:
        p.stop()
        await asyncio.to_thread(p.close, 5.0)


async def test_close_hands_the_reports_it_flushed_to_the_loop(settings: Settings) -> None:
    p = LoopPolledProducer(producer_settings(settings), idle_s=60.0)
    p.start(asyncio.get_running_loop())
    d = Recorded(10, asyncio.get_running_loop().create_future())
    for i in range(10):
        p.producer.produce(settings.topic, b"{}", b"loop-producer-test", on_delivery=p.reporter(d, i))
    p.stop()  # no tick: only close()'s flush, in a thread, serves these reports
    await asyncio.to_thread(p.close, 10.0)
    results = await asyncio.wait_for(d.future, 5)
    assert all(isinstance(r, tuple) for r in results), results
    assert d.threads == {threading.get_ident()}  # served in close()'s thread, settled on the loop
