"""Batch-resolved delivery reports (services/opsmantik/kafka/producer.py): one future per request/send,
results written on the loop only, in any order of arrival."""

from __future__ import annotations

import asyncio

from confluent_kafka import KafkaError
from opsmantik.kafka.producer import Delivery, apply_reports


async def test_one_future_resolves_when_the_last_report_of_the_request_is_in() -> None:
    loop = asyncio.get_running_loop()
    a, b = Delivery(3, loop.create_future()), Delivery(1, loop.create_future())
    apply_reports([(a, 2, None, 0, 12), (b, 0, None, 1, 5), (a, 0, None, 0, 10)])
    assert b.future.done() and b.future.result() == [(1, 5)]
    assert not a.future.done()  # message 1 of `a` has not been reported yet
    assert a.results == [(0, 10), None, (0, 12)]  # what a handler sees at its deadline
    timed_out = KafkaError(KafkaError._MSG_TIMED_OUT)
    apply_reports([(a, 1, timed_out, -1, -1)])
    assert a.future.result() == [(0, 10), timed_out, (0, 12)]  # message 1 goes to the outbox


async def test_a_second_report_for_the_same_message_changes_nothing() -> None:
    loop = asyncio.get_running_loop()
    d = Delivery(2, loop.create_future())
    apply_reports([(d, 0, None, 0, 1), (d, 0, KafkaError(KafkaError._PURGE_QUEUE), -1, -1)])
    assert d.results[0] == (0, 1) and d.remaining == 1 and not d.future.done()


async def test_a_refusal_before_any_report_settles_that_message() -> None:
    loop = asyncio.get_running_loop()
    d = Delivery(3, loop.create_future())
    err = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)
    d.settle(1, err)  # refused by produce() itself, before any report
    apply_reports([(d, 2, None, 0, 7), (d, 0, None, 0, 6)])
    assert d.future.result() == [(0, 6), err, (0, 7)]


async def test_an_empty_batch_is_settled_at_once() -> None:
    d = Delivery(0, asyncio.get_running_loop().create_future())
    assert d.future.done() and d.future.result() == []
