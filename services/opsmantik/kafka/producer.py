"""confluent-kafka's Producer made awaitable, the way this project must use it.

librdkafka calls delivery callbacks from poll(); poll() runs in a background thread (never
flush() on the event loop). The callbacks only record their report; after each poll() round
the thread hands every report of the round to the loop with one loop.call_soon_threadsafe,
where each batch of messages (a `Delivery`) settles; its one future resolves when its last
report is in. (One wake-up per message cost the gateway, relay and worker a fifth of their CPU.)

    PolledProducer   the Producer and its poll thread (the relay's AsyncProducer below)
    LoopPolledProducer  the Producer polled from the event loop, no thread: the gateway's, whose
                     requests read their `Delivery` at a deadline of their own
    AsyncProducer    `await send(...)`: every message's error (or None), in order
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

log = logging.getLogger(__name__)
Result = tuple[int, int] | KafkaError | None  # (partition, offset), the failure, or not yet known


class Delivery:
    """One batch's delivery reports. `results[i]` is (partition, offset) once message i is on
    the broker, its KafkaError if it failed, None while unknown. Only the loop writes them, so
    what a caller reads at its deadline cannot change under it; the first report of a message
    wins. `future` resolves (to `results`) when every message is reported."""

    __slots__ = ("results", "remaining", "future")

    def __init__(self, n: int, future: asyncio.Future[list[Result]]) -> None:
        self.results: list[Result] = [None] * n
        self.remaining = n
        self.future = future
        if n == 0:
            future.set_result(self.results)

    def settle(self, i: int, err: KafkaError | None, partition: int = -1, offset: int = -1) -> None:
        if self.results[i] is not None:
            return
        self.results[i] = err if err is not None else (partition, offset)
        self.remaining -= 1
        if self.remaining == 0 and not self.future.done():
            self.future.set_result(self.results)


# (delivery, index, error, partition, offset): what the poll thread records per report.
Report = tuple[Delivery, int, KafkaError | None, int, int]


def apply_reports(reports: list[Report]) -> None:
    """On the loop: one call per poll() round, however many reports it served."""
    for delivery, i, err, partition, offset in reports:
        delivery.settle(i, err, partition, offset)


class PolledProducer:
    def __init__(self, config: dict[str, object]) -> None:
        self.producer = Producer(config)
        self.loop: asyncio.AbstractEventLoop | None = None
        self._reports: list[Report] = []  # appended by delivery callbacks inside poll()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._thread = threading.Thread(target=self._poll, name="kafka-poll", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.producer.poll(0.05)
            self._hand_over()

    def _hand_over(self) -> None:
        """Pass the reports collected so far to the loop in one call_soon_threadsafe."""
        if not self._reports:
            return
        reports, self._reports = self._reports, []
        loop = self.loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(apply_reports, reports)

    def new_delivery(self, n: int) -> Delivery:
        assert self.loop is not None, "start() first"
        return Delivery(n, self.loop.create_future())

    def reporter(self, delivery: Delivery, i: int) -> Callable[[KafkaError | None, Any], None]:
        def report(err: KafkaError | None, msg: Any) -> None:  # poll thread, inside poll()
            self._reports.append((delivery, i, err, msg.partition(), msg.offset()))

        return report

    def close(self, timeout_s: float = 10.0) -> None:
        """Blocking: call from a thread. Stops polling, then waits for outstanding deliveries
        (their reports are collected by flush() here and handed over like a poll round)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        self.producer.flush(timeout_s)
        self._hand_over()


class LoopPolledProducer:
    """The Producer with its delivery reports served on the event loop: no poll thread.

    poll(0) runs on the loop, from a timer: every `busy_s` (1 ms) while librdkafka holds anything
    of ours (messages queued or in flight, reports not served), every `idle_s` otherwise (for
    error_cb and librdkafka's logs). `produced()`, called after each produce round, moves an idle
    timer to a busy one. A report then settles its `Delivery` inside the delivery callback, on the
    loop thread, which takes an uncontended GIL; with a poll thread (PolledProducer) every report
    re-took the GIL from the loop, built its tuple, and each round woke the loop through
    call_soon_threadsafe (issue 28: the thread was among the largest frames of the gateway's
    profile). A report costs at most `busy_s` more wait; under load the tick fires once per loop
    iteration, when the thread's hand-over also landed.

    Reports served off the loop thread (close()'s flush, in a thread) are handed over as
    PolledProducer's are. Never poll from inside a callback: settling only sets futures, whose
    callbacks run later on the loop.
    """

    def __init__(self, config: dict[str, object], busy_s: float = 0.001, idle_s: float = 0.05) -> None:
        self.producer = Producer(config)
        self.busy_s = busy_s
        self.idle_s = idle_s
        self.loop: asyncio.AbstractEventLoop | None = None
        self.polls = 0  # poll(0) calls made by the ticks, for the tests
        self._loop_thread: int | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._busy = False
        self._stopped = False
        self._reports: list[Report] = []  # reports served off the loop thread (close)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """On the loop's thread."""
        self.loop = loop
        self._loop_thread = threading.get_ident()
        self._stopped = False
        self._arm()

    def _arm(self) -> None:
        assert self.loop is not None
        self._busy = len(self.producer) > 0
        self._timer = self.loop.call_later(self.busy_s if self._busy else self.idle_s, self._tick)

    def _tick(self) -> None:
        self._timer = None
        if self._stopped:
            return
        self.polls += 1
        self.serve()
        if not self._stopped:
            self._arm()

    def produced(self) -> None:
        """After a produce round, on the loop: serve reports every `busy_s` from now on."""
        if not self._busy and self._timer is not None:
            self._timer.cancel()
            self._busy = True
            assert self.loop is not None
            self._timer = self.loop.call_later(self.busy_s, self._tick)

    def serve(self) -> None:
        """poll(0) now, on the loop: the reports that are in. Never from inside a callback."""
        if self._stopped:
            return
        try:
            self.producer.poll(0)
        except Exception:  # a callback raised: logged; the reports left are served next time
            log.exception("delivery report or librdkafka callback failed")

    def new_delivery(self, n: int) -> Delivery:
        assert self.loop is not None, "start() first"
        return Delivery(n, self.loop.create_future())

    def reporter(self, delivery: Delivery, i: int) -> Callable[[KafkaError | None, Any], None]:
        def report(err: KafkaError | None, msg: Any) -> None:  # inside poll() or flush()
            if threading.get_ident() == self._loop_thread:
                delivery.settle(i, err, msg.partition(), msg.offset())
            else:
                self._reports.append((delivery, i, err, msg.partition(), msg.offset()))

        return report

    def produce_all(self, topic: str, keys: Sequence[bytes], values: Sequence[bytes]) -> Delivery:
        """On the loop: values[i] under keys[i], in one produce_batch() call (librdkafka's
        rd_kafka_produce_batch, the configured partitioner run per message as produce() runs
        it), each with a delivery report settling `Delivery.results[i]` as `reporter`'s does,
        with the settle inlined (one Python call per report instead of two). A message the
        batch call refused raises as produce() would have (BufferError when the queue is full,
        else KafkaException); the others are queued and may still be delivered (the caller
        purges, as for a missed deadline). Then serves reports every `busy_s` (`produced`)."""
        n = len(values)
        if len(keys) != n:
            raise ValueError(f"{len(keys)} keys for {n} values")
        delivery = self.new_delivery(n)
        results, future = delivery.results, delivery.future
        loop_thread, get_ident = self._loop_thread, threading.get_ident
        messages: list[dict[str, Any]] = []
        add = messages.append
        for i in range(n):

            def report(err: KafkaError | None, msg: Any, i: int = i) -> None:  # in poll() / flush()
                if get_ident() != loop_thread:
                    self._reports.append((delivery, i, err, msg.partition(), msg.offset()))
                elif results[i] is None:  # Delivery.settle: the first report wins
                    results[i] = err if err is not None else (msg.partition(), msg.offset())
                    delivery.remaining -= 1
                    if delivery.remaining == 0 and not future.done():
                        future.set_result(results)

            add({"value": values[i], "key": keys[i], "callback": report})
        try:
            queued = self.producer.produce_batch(topic, messages) if n else 0
        finally:
            self.produced()
        if queued != n:  # refused messages carry `_error` and get no report
            refused = next(m["_error"] for m in messages if "_error" in m)
            if refused.code() == KafkaError._QUEUE_FULL:
                raise BufferError(refused.str())
            raise KafkaException(refused)
        return delivery

    def stop(self) -> None:
        """On the loop: no more ticks (close() then serves what is left)."""
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def close(self, timeout_s: float = 10.0) -> None:
        """Blocking: call from a thread, after stop(). Waits for outstanding deliveries; their
        reports are handed to the loop in one call_soon_threadsafe."""
        self._stopped = True
        self.producer.flush(timeout_s)
        if not self._reports:
            return
        reports, self._reports = self._reports, []
        loop = self.loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(apply_reports, reports)


KafkaHeaders = list[tuple[str, str | bytes | None]]  # one message's headers, as produce() takes them


class AsyncProducer(PolledProducer):
    def _bind(self) -> None:
        """The poll thread starts with the first send, on that send's loop."""
        loop = asyncio.get_running_loop()
        if self._thread is None:
            self.start(loop)
        elif self.loop is None or self.loop.is_closed():
            self.loop = loop
        elif self.loop is not loop:
            raise RuntimeError("AsyncProducer is in use by another running event loop")

    async def send(
        self,
        topic: str,
        messages: Sequence[tuple[bytes, bytes]],
        full_queue_wait_s: float = 30.0,
        headers: Sequence[KafkaHeaders] | None = None,
    ) -> list[KafkaError | None]:
        """Produce (key, value) pairs, with headers[i] on message i when given, and wait for every
        delivery report."""
        self._bind()
        delivery = self.new_delivery(len(messages))
        produce = self.producer.produce
        for i, (key, value) in enumerate(messages):
            deadline = time.monotonic() + full_queue_wait_s
            message_headers = headers[i] if headers is not None else None
            while True:
                try:
                    produce(
                        topic, value, key, on_delivery=self.reporter(delivery, i), headers=message_headers
                    )
                    break
                except BufferError:  # local queue full: let deliveries drain, bounded
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.01)
                except KafkaException as exc:  # refused up front (e.g. too large): this message's error
                    delivery.settle(i, exc.args[0])
                    break
        results = await delivery.future
        return [r if isinstance(r, KafkaError) else None for r in results]

    async def close(self, timeout_s: float = 10.0) -> None:  # type: ignore[override]
        await asyncio.to_thread(PolledProducer.close, self, timeout_s)
