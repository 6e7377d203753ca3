"""A producer whose unit is the batch: one delivery callback object per send (issue 22).

The worker's billable publish needs one thing per batch: did every message reach the broker
(acks=all), and if not, which errors. `AsyncProducer` (opsmantik.kafka.producer) builds a
closure per message, records a tuple per report and settles each message on the loop: a few µs
per event. Here every message of a send shares one bound callback that counts down and keeps
the failures, in the poll thread; the loop is woken once per send, when its last report is in.
(librdkafka's `delivery.report.only.error` with "done when the queue is empty" was tried
first: it needs a busy poll to notice the empty queue, 1000 wake-ups a second while a batch
waits, which cost more than the reports at this worker's rates.)
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

from confluent_kafka import KafkaError, KafkaException, Producer

from opsmantik.kafka.producer import KafkaHeaders

POLL_S = 0.05  # poll() returns as soon as a report is served; this only bounds the stop check


class _Send:
    __slots__ = ("errors", "future", "loop", "remaining", "lock")

    def __init__(self, loop: asyncio.AbstractEventLoop, lock: threading.Lock) -> None:
        self.errors: list[KafkaError] = []
        self.future: asyncio.Future[None] = loop.create_future()
        self.loop = loop
        self.remaining = 1  # the send itself holds one until every message is produced
        self.lock = lock  # remaining is counted from the loop and from the poll thread

    def report(self, err: KafkaError | None, _msg: object) -> None:  # poll thread
        if err is not None:
            self.errors.append(err)
        self.add(-1)

    def add(self, n: int) -> None:
        with self.lock:
            self.remaining += n
            last = self.remaining == 0
        if last and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(_release, self.future)


def _release(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class BatchProducer:
    def __init__(self, config: dict[str, object]) -> None:
        self.producer = Producer(config)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.producer.poll(POLL_S)

    async def send(
        self,
        topic: str,
        messages: Sequence[tuple[bytes, bytes]],
        full_queue_wait_s: float = 30.0,
        headers: Sequence[KafkaHeaders] | None = None,
    ) -> list[KafkaError]:
        """Produce (key, value) pairs, with headers[i] on message i when given; when every report
        is in, the failures (empty: all on the broker)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._poll, name="kafka-poll-batch", daemon=True)
            self._thread.start()
        s = _Send(asyncio.get_running_loop(), self._lock)
        produce, report = self.producer.produce, s.report
        s.add(len(messages))
        for i, (key, value) in enumerate(messages):
            deadline = time.monotonic() + full_queue_wait_s
            message_headers = headers[i] if headers is not None else None
            while True:
                try:
                    produce(topic, value, key, on_delivery=report, headers=message_headers)
                    break
                except BufferError:  # local queue full: let deliveries drain, bounded
                    if time.monotonic() > deadline:
                        raise  # the send fails; reports still due just count down
                    await asyncio.sleep(0.01)
                except KafkaException as exc:  # refused up front (e.g. too large): never reported
                    s.errors.append(exc.args[0])
                    s.add(-1)
                    break
        s.add(-1)  # every message produced: the last report releases the send
        await s.future
        return s.errors

    def _close(self, timeout_s: float) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        self.producer.flush(timeout_s)

    async def close(self, timeout_s: float = 10.0) -> None:
        await asyncio.to_thread(self._close, timeout_s)
