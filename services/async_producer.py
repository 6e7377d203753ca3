"""confluent-kafka's Producer made awaitable, the way this project must use it.

librdkafka calls delivery callbacks from poll(); poll() runs in a background thread (never
flush() on the event loop). The callbacks only record their report; after each poll() round
the thread hands every report of the round to the loop with one loop.call_soon_threadsafe,
and each `send` has one future that resolves when its last report is in. (One wake-up per
message cost the relay and the worker a fifth of their CPU.) `send` returns one error (or
None) per message, in order.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer


class _Send:
    """One `send`'s reports; written only on the loop."""

    __slots__ = ("errors", "remaining", "future")

    def __init__(self, n: int, future: asyncio.Future[list[KafkaError | None]]) -> None:
        self.errors: list[KafkaError | None] = [None] * n
        self.remaining = n
        self.future = future

    def settle(self, i: int, err: KafkaError | None) -> None:
        self.errors[i] = err
        self.remaining -= 1
        if self.remaining == 0 and not self.future.done():
            self.future.set_result(self.errors)


def _apply(reports: list[tuple[_Send, int, KafkaError | None]]) -> None:
    for send, i, err in reports:
        send.settle(i, err)


class AsyncProducer:
    def __init__(self, config: dict[str, object]) -> None:
        self._producer = Producer(config)
        self._loop: asyncio.AbstractEventLoop | None = None  # bound by the first send
        self._reports: list[tuple[_Send, int, KafkaError | None]] = []  # poll thread only
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="kafka-poll", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)
            self._hand_over()

    def _hand_over(self) -> None:
        if not self._reports:
            return
        reports, self._reports = self._reports, []
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(_apply, reports)

    def _bind(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._loop is None or self._loop.is_closed():
            self._loop = loop
        elif self._loop is not loop:
            raise RuntimeError("AsyncProducer is in use by another running event loop")
        return loop

    async def send(self, topic: str, messages: Sequence[tuple[bytes, bytes]],
                   full_queue_wait_s: float = 30.0) -> list[KafkaError | None]:
        """Produce (key, value) pairs and wait for every delivery report."""
        if not messages:
            return []
        loop = self._bind()
        send = _Send(len(messages), loop.create_future())
        produce = self._producer.produce

        def reporter(i: int) -> Any:
            def on_delivery(err: KafkaError | None, _msg: object) -> None:  # inside poll()
                self._reports.append((send, i, err))
            return on_delivery

        for i, (key, value) in enumerate(messages):
            deadline = time.monotonic() + full_queue_wait_s
            while True:
                try:
                    produce(topic, value, key, on_delivery=reporter(i))
                    break
                except BufferError:  # local queue full: let deliveries drain, bounded
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.01)
                except KafkaException as exc:  # refused up front (e.g. too large): this message's error
                    send.settle(i, exc.args[0])
                    break
        return list(await send.future)

    async def close(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        await asyncio.to_thread(self._thread.join, timeout_s)
        await asyncio.to_thread(self._producer.flush, timeout_s)  # reports collected here
        self._hand_over()
