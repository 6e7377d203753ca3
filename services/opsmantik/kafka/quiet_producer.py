"""A producer that hears only about failures: `delivery.report.only.error` (issue 22).

The worker's billable publish needs to know one thing per batch: did every message reach the
broker (acks=all), and if not, which error. A delivery report per message (a Python callback in
the poll thread, a tuple, a hand-over to the loop, a settle) cost it a few µs per event. Here
librdkafka reports only failed messages, and a send is done when the producer's queue is empty
after it: `len(producer)` counts messages queued, in flight and not yet reported, so at zero
every message produced before has been acknowledged by the broker or reported failed (its
callback already ran, in poll()).

Sends that overlap (the worker's pipelined batches) wait for the queue to empty once for all of
them: a send may be held until a later one is on the broker too. Conservative, never early.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

from confluent_kafka import KafkaError, KafkaException, Producer

IDLE_POLL_S = 0.05  # nothing waiting: wake for error reports and the stop flag only
BUSY_POLL_S = 0.001  # a send is waiting for the queue to empty: successes wake nothing


class _Send:
    __slots__ = ("errors", "future", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.errors: list[KafkaError] = []
        self.future: asyncio.Future[None] = loop.create_future()
        self.loop = loop

    def report(self, err: KafkaError | None, _msg: object) -> None:  # poll thread, failures only
        if err is not None:
            self.errors.append(err)


def _release(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class QuietProducer:
    def __init__(self, config: dict[str, object]) -> None:
        self.producer = Producer({**config, "delivery.report.only.error": True})
        self._waiting: list[_Send] = []  # sends whose messages are all produced
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _poll(self) -> None:
        while not self._stop.is_set():
            if not self._waiting:  # nobody waits: sleep until a send does (errors served anyway)
                self._wake.wait(IDLE_POLL_S)
                self._wake.clear()
                self.producer.poll(0)
                continue
            self.producer.poll(BUSY_POLL_S)
            if len(self.producer) == 0:
                with self._lock:
                    done, self._waiting = self._waiting, []
                for s in done:
                    if not s.loop.is_closed():
                        s.loop.call_soon_threadsafe(_release, s.future)

    async def send(
        self, topic: str, messages: Sequence[tuple[bytes, bytes]], full_queue_wait_s: float = 30.0
    ) -> list[KafkaError]:
        """Produce (key, value) pairs; when all are on the broker or failed, the failures."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._poll, name="kafka-poll-quiet", daemon=True)
            self._thread.start()
        s = _Send(asyncio.get_running_loop())
        produce, report = self.producer.produce, s.report
        for key, value in messages:
            deadline = time.monotonic() + full_queue_wait_s
            while True:
                try:
                    produce(topic, value, key, on_delivery=report)
                    break
                except BufferError:  # local queue full: let deliveries drain, bounded
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.01)
                except KafkaException as exc:  # refused up front (e.g. too large)
                    s.errors.append(exc.args[0])
                    break
        with self._lock:
            self._waiting.append(s)
        self._wake.set()
        await s.future
        return s.errors

    def _close(self, timeout_s: float) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        self.producer.flush(timeout_s)

    async def close(self, timeout_s: float = 10.0) -> None:
        await asyncio.to_thread(self._close, timeout_s)
        for s in self._waiting:
            _release(s.future)
