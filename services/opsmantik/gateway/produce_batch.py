"""Adaptive linger for the gateway's Kafka path: requests share produce batches (issue 22).

librdkafka's `linger.ms` is one fixed delay: 2 ms made every single-event request wait 2 ms on
an idle gateway, 0 made one tiny produce (and one delivery round) per request under load. Here
the gateway lingers itself, by load: librdkafka runs with `LIBRDKAFKA_LINGER_MS` (0.2 ms: long
enough that the messages of one `_flush` loop leave as one ProduceRequest instead of being split
by the broker thread's first wake-up, short enough not to matter to a single request; issue 28).
Then:

- when fewer than `max_inflight` batches are on their way, the requests of the current loop
  iteration are produced at its end (`call_soon`): an idle gateway sends at once;
- otherwise new requests join one open batch, produced as soon as an in-flight batch lands, or
  after `max_linger_s` at most: under load a batch grows with the load, one round trip's worth.

A batch is one `Delivery` (one future, settled on the loop as its reports are served: kafka/
producer.py's LoopPolledProducer) and one deadline timer for all its requests: the request
awaits its batch, then reads its own slice of the results. The deadline counts from the batch's
first request, so no request waits longer than `deadline_s` in all (linger included); at the
deadline the reports already in librdkafka's queue are served first (`serve`), then read. What
is not on the broker by then is the caller's to send to the outbox (and purge), exactly as for
a request of its own.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Sequence

from opsmantik.kafka.producer import Delivery, Result

LIBRDKAFKA_LINGER_MS = 0.2  # the gateway's producer: the batching below decides (module doc)
MAX_INFLIGHT = 2  # batches on their way before new requests linger for one
MAX_LINGER_S = 0.001  # longest a request waits for an in-flight batch to land
MAX_BATCH = 5000  # messages: a batch this big is produced at once
MAX_SHARED = 10  # requests of more events than this are produced alone (`_alone`)


class _Batch:
    __slots__ = ("keys", "values", "done", "t0", "delivery", "error", "linger", "deadline", "counted")

    def __init__(self, done: asyncio.Future[None], t0: float) -> None:
        self.keys: list[bytes] = []
        self.values: list[bytes] = []
        self.done = done
        self.t0 = t0
        self.delivery: Delivery | None = None
        self.error: BaseException | None = None
        self.linger: asyncio.Handle | None = None  # the call_soon / call_later that produces it
        self.deadline: asyncio.TimerHandle | None = None
        self.counted = False  # holds an in-flight slot

    def results(self, start: int, n: int) -> list[Result]:
        """Once `done`: messages start..start+n's results, or what produce raised."""
        if self.error is not None:
            raise self.error
        assert self.delivery is not None
        return self.delivery.results[start : start + n]


class ProduceBatcher:
    """`await submit(keys, values)`: the delivery results of those messages, in order, when all
    are in or at the deadline (None = unknown yet); raises what `produce` raised (BufferError,
    KafkaException: values queued before the raise may still be delivered)."""

    def __init__(
        self,
        produce: Callable[[Sequence[bytes], Sequence[bytes]], Delivery],
        deadline_s: float,
        max_inflight: int = MAX_INFLIGHT,
        max_linger_s: float = MAX_LINGER_S,
        max_batch: int = MAX_BATCH,
        max_shared: int = MAX_SHARED,
        serve: Callable[[], None] = lambda: None,
    ) -> None:
        """`serve`: serves the delivery reports that are in (poll(0) on the loop), called at a
        deadline before its results are read."""
        self.max_shared = max_shared
        self._serve = serve
        self._produce = produce
        self.deadline_s = deadline_s
        self.max_inflight = max_inflight
        self.max_linger_s = max_linger_s
        self.max_batch = max_batch
        self.inflight = 0
        self._open: _Batch | None = None
        self.batches = 0  # produced, for tests and metrics
        self.messages = 0

    async def submit(self, keys: Sequence[bytes], values: Sequence[bytes]) -> list[Result]:
        joined = self.join(keys, values)
        if joined is None:
            return await self._alone(asyncio.get_running_loop(), keys, values)
        b, start = joined
        await b.done
        return b.results(start, len(values))

    def join(self, keys: Sequence[bytes], values: Sequence[bytes]) -> tuple[_Batch, int] | None:
        """`submit` without its coroutine: the shared batch these messages joined and where they
        start in it (await `batch.done`, then `batch.results(start, n)`), or None for a request
        of more than `max_shared` events (submit() produces it alone)."""
        if len(values) > self.max_shared:
            return None
        b = self._open
        if b is None:
            loop = asyncio.get_running_loop()
            b = self._open = _Batch(loop.create_future(), loop.time())
            if self.inflight < self.max_inflight:
                b.linger = loop.call_soon(self._flush, b)
            else:
                b.linger = loop.call_later(self.max_linger_s, self._flush, b)
        start = len(b.values)
        b.keys.extend(keys)
        b.values.extend(values)
        if len(b.values) >= self.max_batch:
            self._flush(b)
        return b, start

    async def _alone(
        self, loop: asyncio.AbstractEventLoop, keys: Sequence[bytes], values: Sequence[bytes]
    ) -> list[Result]:
        """A request of many events is a batch of its own (as before issue 22): it waits for
        its own messages only, so one slow partition cannot hold (or time out) the others."""
        delivery = self._produce(keys, values)
        fut = delivery.future
        if not fut.done():
            timer = loop.call_later(self.deadline_s, self._release, fut)
            try:
                await fut
            finally:
                timer.cancel()
        return list(delivery.results)

    def _flush(self, b: _Batch) -> None:
        if self._open is b:
            self._open = None
        if b.linger is not None:
            b.linger.cancel()
            b.linger = None
        if b.delivery is not None or b.done.done():
            return
        try:
            b.delivery = self._produce(b.keys, b.values)
        except Exception as exc:  # BufferError, KafkaException: every request of the batch sees it
            b.error = exc
            b.done.set_result(None)
            return
        self.batches += 1
        self.messages += len(b.values)
        fut = b.delivery.future
        if fut.done():
            b.done.set_result(None)
            return
        self.inflight += 1
        b.counted = True
        loop = fut.get_loop()
        b.deadline = loop.call_at(b.t0 + self.deadline_s, self._deadline, b)
        fut.add_done_callback(functools.partial(self._landed, b))

    def _landed(self, b: _Batch, _fut: asyncio.Future[list[Result]]) -> None:
        self._settle(b)

    def _deadline(self, b: _Batch) -> None:
        self._serve()  # the reports already in count (a timer callback: never inside poll())
        self._settle(b)

    def _release(self, fut: asyncio.Future[list[Result]]) -> None:
        self._serve()
        _release(fut)

    def _settle(self, b: _Batch) -> None:
        """Every report in, or the deadline: release the batch's requests and its in-flight slot."""
        if b.deadline is not None:
            b.deadline.cancel()
            b.deadline = None
        if not b.done.done():
            b.done.set_result(None)
        if b.counted:
            b.counted = False
            self.inflight -= 1
            nxt = self._open
            if nxt is not None and self.inflight < self.max_inflight and nxt.linger is not None:
                # An in-flight slot is free: the lingering batch goes now (end of this iteration,
                # so requests arriving with the reports still join it).
                nxt.linger.cancel()
                nxt.linger = fut_loop(b).call_soon(self._flush, nxt)


def _release(fut: asyncio.Future[list[Result]]) -> None:
    if not fut.done():
        fut.set_result([])  # the deadline: the caller reads Delivery.results as they stand


def fut_loop(b: _Batch) -> asyncio.AbstractEventLoop:
    return b.done.get_loop()
