"""The gateway's batch produce (kafka/producer.py `LoopPolledProducer.produce_all`, one
produce_batch() call per batch; issue 28) against the real broker: every message's receipt
(partition, offset) is where that very message is stored (read back by offset), and each lands
on the partition produce() picks for its key, so the ingest topic's keys spread as before."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from opsmantik.config import Settings
from opsmantik.gateway.publisher import producer_settings
from opsmantik.kafka.producer import LoopPolledProducer
from opsmantik.kafka.topics import ensure_topics

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def own(settings: Settings) -> Settings:
    """Topics of this module's own: its messages are not events (b"probe", {"n": …}), and on the
    session's ingest topic they would reach every later test that reads it (test_gateway_fuzz)."""
    mine = dataclasses.replace(
        settings,
        topic=f"{settings.topic}.produce-all",
        billable_topic=f"{settings.billable_topic}.produce-all",
    )
    ensure_topics(mine)
    return mine


def _partitions_by_produce(settings: Settings, keys: list[bytes]) -> dict[bytes, int]:
    """The partition plain produce() (the configured partitioner) picks for each key."""
    p = Producer(producer_settings(settings))
    picked: dict[bytes, int] = {}
    for k in keys:
        p.produce(
            settings.topic, b"probe", k, on_delivery=lambda e, m, k=k: picked.__setitem__(k, m.partition())
        )
    assert p.flush(20) == 0
    return picked


def _read(settings: Settings, where: list[tuple[int, int]]) -> list[bytes]:
    c = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": "produce-all-test",
            "enable.auto.commit": False,
        }
    )
    try:
        out = []
        for partition, offset in where:
            c.assign([TopicPartition(settings.topic, partition, offset)])
            msg = c.poll(10)
            assert msg is not None and msg.error() is None, msg
            assert (msg.partition(), msg.offset()) == (partition, offset)
            out.append(msg.value())
        return out
    finally:
        c.close()


async def test_each_receipt_is_where_its_message_is_stored(own: Settings) -> None:
    settings = own
    keys = [f"site-{i % 7}/event-{i}".encode() for i in range(60)]
    values = [b'{"n":%d}' % i for i in range(60)]
    p = LoopPolledProducer(producer_settings(settings))
    p.start(asyncio.get_running_loop())
    try:
        delivery = p.produce_all(settings.topic, keys, values)
        results = await asyncio.wait_for(delivery.future, 20)
    finally:
        p.stop()
        await asyncio.to_thread(p.close, 5.0)
    assert all(isinstance(r, tuple) and r[1] >= 0 for r in results), results
    where = [r for r in results if isinstance(r, tuple)]
    assert len(set(where)) == len(values)  # one offset per message
    assert await asyncio.to_thread(_read, settings, where) == values
    picked = await asyncio.to_thread(_partitions_by_produce, settings, keys)
    assert [w[0] for w in where] == [picked[k] for k in keys]
    assert len({w[0] for w in where}) > 1  # the keys did spread (else the check above is weak)


async def test_an_empty_batch_is_settled_at_once(own: Settings) -> None:
    settings = own
    p = LoopPolledProducer(producer_settings(settings))
    p.start(asyncio.get_running_loop())
    try:
        delivery = p.produce_all(settings.topic, [], [])
        assert delivery.future.done() and delivery.results == []
    finally:
        p.stop()
        await asyncio.to_thread(p.close, 5.0)
