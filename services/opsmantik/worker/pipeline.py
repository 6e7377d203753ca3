"""The ledger loop and its seam: take a batch, write ledger and invoice in one transaction,
publish the billable rows, commit offsets only after both.

`LedgerStage` is the seam (the one place its contract is written down); `BatchProcessor`
(processor.py) is the product's stage, tests and tests/bench/consume_probe.py plug in others.
`ledger_loop` drives it, pipelined (issue 22): batch N's billable publish runs while batch N+1's
ledger transaction does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from opsmantik.worker.handoff import Batch
from opsmantik.worker.processor import Fatal, RawMessage


class Committed(Protocol):
    """A batch whose ledger transaction committed; `published` finishes when its billable rows
    are on the billable topic (or raises Fatal when the publish kept failing)."""

    @property
    def published(self) -> asyncio.Future[None]: ...


class LedgerStage(Protocol):
    """The seam between the stream (Faust, opsmantik.worker.faust_overrides) and the ledger.

    Contract, per batch of raw messages `(value, partition, offset)` in fetch order:
    1. `begin` writes the batch's ledger rows, invoice counts, meter aggregates, alert
       notifications, dead letters and freshness in ONE Postgres transaction, idempotently (a
       replayed message adds nothing), and returns only after COMMIT. It starts the billable
       publish of the batch's canonical rows and returns it as `Committed.published`, not awaited.
    2. The offsets of the batch are committed only after both: `ledger_loop` acks a batch when its
       `published` finished, in the order batches were taken; Faust commits acked offsets only.
    3. Fail-stop, never skip: a batch that cannot be written or published raises (Fatal after its
       retries) from `begin` or `published`; `ledger_loop` then calls `fail` once and acks nothing
       more, and the process exits non-zero so the next worker replays the unacked batches.
    """

    def begin(self, batch: Sequence[RawMessage]) -> Awaitable[Committed]: ...

    def fail(self, exc: Fatal) -> None: ...


async def ledger_loop(
    queue: asyncio.Queue[Batch], stage: LedgerStage, ack: Callable[[Batch], Any], max_events: int
) -> None:
    """Take what is queued (up to `max_events` events) as one batch, `stage.begin` it, and ack the
    previous batch once its publish finished: N publishes while N+1 is written, acks stay in
    order. With nothing queued behind it a batch is finished at once (its ack is not held for a
    next batch that may not come). Any exception is fail-stop: `fail` is told, and the loop holds
    every unacked batch until the process stops (acking anything after them would let the
    commit move past them; the next worker replays them and the ledger dedupes)."""
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
            committed = await stage.begin(
                [(r.value, r.partition, r.offset) for b in batches for r in b.records]
            )
            if pending is not None:
                await finish(*pending)
            pending = (batches, committed.published)
        except Exception as exc:  # Fatal, or a bug: fail-stop, never skip the batch
            stage.fail(exc if isinstance(exc, Fatal) else Fatal(f"batch handler raised: {exc!r}"))
            await asyncio.Future()
