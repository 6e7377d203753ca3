"""The batch producer under the worker's billable publish (opsmantik.kafka.batch_producer):
a send returns once every message is on the broker, and a message the broker refuses comes back
as that send's error, on the real Kafka."""

import asyncio
import os
import uuid

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from opsmantik.kafka.batch_producer import BatchProducer
from opsmantik.kafka.settings import producer_config


def _topic(settings, **config):
    name = f"{settings.topic}.batchp.{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    for fut in admin.create_topics([NewTopic(name, 1, 1, config=config)]).values():
        fut.result(30)
    return name


def _high_watermark(settings, topic):
    c = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"wm-{uuid.uuid4().hex}"})
    try:
        return c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1]
    finally:
        c.close()


def test_send_returns_once_every_message_is_on_the_broker(settings):
    topic = _topic(settings)

    async def run():
        p = BatchProducer(producer_config(settings))
        try:
            first = await p.send(topic, [(b"k", f"m{i}".encode()) for i in range(500)])
            on_broker = _high_watermark(settings, topic)  # before close() could flush anything
            second = await p.send(topic, [(b"k", b"last")])
            return first, on_broker, second
        finally:
            await p.close()

    first, on_broker, second = asyncio.run(run())
    assert first == [] and second == []
    assert on_broker == 500


def test_a_message_the_broker_refuses_is_the_sends_error(settings):
    topic = _topic(settings, **{"max.message.bytes": "2000"})

    async def run():
        p = BatchProducer(producer_config(settings, **{"message.timeout.ms": 10000}))
        try:
            ok = [(b"k", b"small")] * 3
            return await asyncio.wait_for(p.send(topic, [*ok, (b"k", os.urandom(20_000)), *ok]), 30)
        finally:
            await p.close()

    errors = asyncio.run(run())
    assert len(errors) >= 1
    assert "MSG_SIZE_TOO_LARGE" in errors[0].name()
