"""Requests of many events go to a producer of their own (produce_batch.py `produce_alone`,
publisher.py's bulk producer; issue 28): its linger is the producer default the raw-producer
baseline runs with, and the shared batches keep theirs."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from opsmantik.config import Settings
from opsmantik.gateway.produce_batch import LIBRDKAFKA_BULK_LINGER_MS, ProduceBatcher
from opsmantik.gateway.publisher import producer_settings
from opsmantik.kafka.producer import Delivery
from opsmantik.kafka.settings import producer_config


class Recorder:
    def __init__(self) -> None:
        self.calls: list[list[bytes]] = []
        self.deliveries: list[Delivery] = []
        self.served = 0

    def produce(self, keys: Sequence[bytes], values: Sequence[bytes]) -> Delivery:
        d = Delivery(len(values), asyncio.get_running_loop().create_future())
        self.calls.append(list(values))
        self.deliveries.append(d)
        return d

    def serve(self) -> None:
        self.served += 1


async def test_a_request_of_many_events_goes_to_the_alone_producer() -> None:
    shared, alone = Recorder(), Recorder()
    b = ProduceBatcher(
        shared.produce,
        deadline_s=5.0,
        max_shared=2,
        serve=shared.serve,
        produce_alone=alone.produce,
        serve_alone=alone.serve,
    )
    big = asyncio.ensure_future(b.submit([b"k"] * 3, [b"a", b"b", b"c"]))
    small = asyncio.ensure_future(b.submit([b"k"] * 2, [b"d", b"e"]))
    for _ in range(3):
        await asyncio.sleep(0)
    assert alone.calls == [[b"a", b"b", b"c"]] and shared.calls == [[b"d", b"e"]]
    for i in range(3):
        alone.deliveries[0].settle(i, None, 1, 10 + i)
    for i in range(2):
        shared.deliveries[0].settle(i, None, 2, 20 + i)
    assert await big == [(1, 10), (1, 11), (1, 12)]
    assert await small == [(2, 20), (2, 21)]


async def test_a_deadline_of_a_request_alone_serves_its_own_producer() -> None:
    shared, alone = Recorder(), Recorder()
    b = ProduceBatcher(
        shared.produce,
        deadline_s=0.02,
        max_shared=1,
        serve=shared.serve,
        produce_alone=alone.produce,
        serve_alone=alone.serve,
    )
    assert await b.submit([b"k"] * 2, [b"a", b"b"]) == [None, None]
    assert (alone.served, shared.served) == (1, 0)


async def test_without_an_alone_producer_every_request_uses_the_one() -> None:
    one = Recorder()
    b = ProduceBatcher(one.produce, deadline_s=0.02, max_shared=1, serve=one.serve)
    assert await b.submit([b"k"] * 2, [b"a", b"b"]) == [None, None]
    assert one.calls == [[b"a", b"b"]] and one.served == 1


def test_the_bulk_producer_lingers_as_the_producer_default_and_the_shared_one_does_not() -> None:
    s = Settings()
    assert producer_settings(s, LIBRDKAFKA_BULK_LINGER_MS)["linger.ms"] == producer_config(s)["linger.ms"]
    bulk, shared = producer_settings(s, LIBRDKAFKA_BULK_LINGER_MS), producer_settings(s)
    assert {k: v for k, v in bulk.items() if k != "linger.ms"} == {
        k: v for k, v in shared.items() if k != "linger.ms"
    }
    assert bulk["acks"] == "all" and bulk["enable.idempotence"] is True
