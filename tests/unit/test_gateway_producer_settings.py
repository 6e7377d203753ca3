"""The gateway's producer: durable (acks=all, idempotence) with a sub-millisecond librdkafka linger
(produce_batch.py: the messages of one flush leave as one ProduceRequest; issue 28)."""

from __future__ import annotations

from opsmantik.config import Settings
from opsmantik.gateway.publisher import producer_settings


def test_durable_with_a_sub_millisecond_linger() -> None:
    conf = producer_settings(Settings())
    assert conf["acks"] == "all" and conf["enable.idempotence"] is True
    linger = conf["linger.ms"]
    assert isinstance(linger, float) and 0 < linger < 1
