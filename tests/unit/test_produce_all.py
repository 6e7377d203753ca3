"""`LoopPolledProducer.produce_all` (kafka/producer.py, issue 28) on a fake librdkafka producer:
each report settles its own message, the first report of a message wins, a report served off the
loop's thread is handed over, and a message produce_batch() refused raises as produce() would
(BufferError for a full queue, else KafkaException) so the publisher falls back as before."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException
from opsmantik.kafka.producer import LoopPolledProducer


class Msg:
    def __init__(self, partition: int, offset: int) -> None:
        self._p, self._o = partition, offset

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o


class FakeProducer:
    """produce_batch() as confluent-kafka's: refused messages get `_error` and no report."""

    def __init__(self, refuse: dict[int, KafkaError] | None = None) -> None:
        self.refuse = refuse or {}
        self.batches: list[list[dict[str, Any]]] = []

    def produce_batch(self, topic: str, messages: list[dict[str, Any]]) -> int:
        self.batches.append(messages)
        for i, err in self.refuse.items():
            messages[i]["_error"] = err
        return len(messages) - len(self.refuse)

    def poll(self, timeout: float) -> int:
        return 0

    def __len__(self) -> int:
        return 0


def producer(fake: FakeProducer) -> LoopPolledProducer:
    p = LoopPolledProducer({"bootstrap.servers": "127.0.0.1:1"}, idle_s=60.0)
    p.producer = fake  # type: ignore[assignment]
    p.start(asyncio.get_running_loop())
    return p


async def test_each_report_settles_its_own_message_in_any_order() -> None:
    fake = FakeProducer()
    p = producer(fake)
    try:
        d = p.produce_all("t", [b"k0", b"k1", b"k2"], [b"a", b"b", b"c"])
        [messages] = fake.batches
        assert [(m["key"], m["value"]) for m in messages] == [(b"k0", b"a"), (b"k1", b"b"), (b"k2", b"c")]
        messages[2]["callback"](None, Msg(1, 70))
        messages[0]["callback"](None, Msg(4, 50))
        assert d.results == [(4, 50), None, (1, 70)] and not d.future.done()
        late = KafkaError(KafkaError._MSG_TIMED_OUT)
        messages[0]["callback"](late, Msg(-1, -1))  # a second report of message 0 changes nothing
        messages[1]["callback"](late, Msg(-1, -1))
        assert d.future.done() and d.future.result() == [(4, 50), late, (1, 70)]
        assert d.remaining == 0
    finally:
        p.stop()


async def test_a_report_served_off_the_loop_thread_is_handed_over() -> None:
    fake = FakeProducer()
    p = producer(fake)
    try:
        d = p.produce_all("t", [b"k"], [b"a"])
        report = fake.batches[0][0]["callback"]
        thread = threading.Thread(target=report, args=(None, Msg(2, 9)))
        thread.start()
        thread.join()
        assert d.results == [None]  # not settled off the loop
        assert p._reports == [(d, 0, None, 2, 9)]
    finally:
        p.stop()


@pytest.mark.parametrize(
    ("code", "raised"),
    [(KafkaError._QUEUE_FULL, BufferError), (KafkaError.MSG_SIZE_TOO_LARGE, KafkaException)],
)
async def test_a_refused_message_raises_as_produce_would(code: int, raised: type[Exception]) -> None:
    fake = FakeProducer({1: KafkaError(code)})
    p = producer(fake)
    try:
        with pytest.raises(raised):
            p.produce_all("t", [b"k"] * 3, [b"a", b"b", b"c"])
        assert p._busy  # reports of the queued ones are served from now on
    finally:
        p.stop()


async def test_keys_and_values_must_pair_up() -> None:
    p = producer(FakeProducer())
    try:
        with pytest.raises(ValueError):
            p.produce_all("t", [b"k"], [b"a", b"b"])
    finally:
        p.stop()
