"""The ledger loop, pipelined (issue 22): batch N's billable publish runs while batch N+1's
ledger transaction does.

Commit order is kept: a batch is acked (and so becomes committable) only after its ledger
transaction committed and its billable publish finished, and batches are acked in the order
they were taken. With nothing queued behind it a batch is finished at once (its ack is not held
for a next batch that may not come). Any exception is fail-stop: `fail` is told, and the loop
holds every unacked batch until the process stops (acking anything after them would let the
commit move past them; the next worker replays them and the ledger dedupes).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from opsmantik.worker.consumer import Batch
from opsmantik.worker.processor import Fatal, RawMessage


class _Staged(Protocol):
    @property
    def published(self) -> asyncio.Future[None]: ...


class Stages(Protocol):
    def begin(self, batch: Sequence[RawMessage]) -> Awaitable[_Staged]: ...

    def fail(self, exc: Fatal) -> None: ...


async def ledger_loop(
    queue: asyncio.Queue[Batch], stages: Stages, ack: Callable[[Batch], Any], max_events: int
) -> None:
    pending: tuple[list[Batch], asyncio.Future[None]] | None = None

    async def finish(batches: list[Batch], published: asyncio.Future[None]) -> None:
        await published  # the billable publish of a committed batch; Fatal when it kept failing
        for b in batches:
            ack(b)

    while True:
        try:
            if pending is not None and queue.empty():
                await finish(*pending)
                pending = None
            batches = [await queue.get()]
            n = len(batches[0].records)
            while n < max_events and not queue.empty():
                batches.append(queue.get_nowait())
                n += len(batches[-1].records)
            staged = await stages.begin(
                [(r.value, r.partition, r.offset) for b in batches for r in b.records]
            )
            if pending is not None:
                await finish(*pending)
            pending = (batches, staged.published)
        except Exception as exc:  # Fatal, or a bug: fail-stop, never skip the batch
            stages.fail(exc if isinstance(exc, Fatal) else Fatal(f"batch handler raised: {exc!r}"))
            await asyncio.Future()
