"""confluent-kafka's Producer made awaitable, the way this project must use it.

librdkafka calls delivery callbacks from poll(); poll() runs in a background thread
(never flush() on the event loop), and each callback resolves its asyncio future with
loop.call_soon_threadsafe. `send` returns one error (or None) per message, in order.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

from confluent_kafka import KafkaError, KafkaException, Producer


class AsyncProducer:
    def __init__(self, config: dict[str, object]) -> None:
        self._producer = Producer(config)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="kafka-poll", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)

    async def send(self, topic: str, messages: Sequence[tuple[bytes, bytes]],
                   full_queue_wait_s: float = 30.0) -> list[KafkaError | None]:
        """Produce (key, value) pairs and wait for every delivery report."""
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[KafkaError | None]] = []

        def resolve(fut: asyncio.Future[KafkaError | None], err: KafkaError | None) -> None:
            if not fut.done():
                fut.set_result(err)

        for key, value in messages:
            fut: asyncio.Future[KafkaError | None] = loop.create_future()

            def on_delivery(err: KafkaError | None, _msg: object,
                            fut: asyncio.Future[KafkaError | None] = fut) -> None:
                loop.call_soon_threadsafe(resolve, fut, err)

            deadline = time.monotonic() + full_queue_wait_s
            while True:
                try:
                    self._producer.produce(topic, value, key, on_delivery=on_delivery)
                    break
                except BufferError:  # local queue full: let deliveries drain, bounded
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.01)
                except KafkaException as exc:  # refused up front (e.g. too large): this message's error
                    fut.set_result(exc.args[0])
                    break
            futures.append(fut)
        return list(await asyncio.gather(*futures))

    async def close(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        await asyncio.to_thread(self._thread.join, timeout_s)
        await asyncio.to_thread(self._producer.flush, timeout_s)
