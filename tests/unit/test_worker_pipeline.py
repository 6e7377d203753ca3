"""The pipelined ledger loop (services/opsmantik/worker/pipeline.py): publish of N beside the
ledger write of N+1, acks in order and only after both."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace

from opsmantik.worker.handoff import Batch
from opsmantik.worker.pipeline import ledger_loop
from opsmantik.worker.processor import Fatal, RawMessage


def batch(first: int, n: int = 2) -> Batch:
    records = [SimpleNamespace(value=b"v", partition=0, offset=o) for o in range(first, first + n)]
    return Batch(generation=1, tp=None, start=first, records=records)  # type: ignore[arg-type]


@dataclass
class Stages:
    """begin() records the offsets written; each batch's publish is a future the test settles."""

    written: list[list[int]] = field(default_factory=list)
    publishes: list[asyncio.Future[None]] = field(default_factory=list)
    failed: list[Fatal] = field(default_factory=list)
    write_error: Exception | None = None

    async def begin(self, records: Sequence[RawMessage]) -> SimpleNamespace:
        if self.write_error is not None:
            raise self.write_error
        self.written.append([o for _v, _p, o in records])
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.publishes.append(fut)
        return SimpleNamespace(published=fut)

    def fail(self, exc: Fatal) -> None:
        self.failed.append(exc)


async def _spin() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def start(stages: Stages, queue: asyncio.Queue[Batch], acked: list[int]) -> asyncio.Task[None]:
    task = asyncio.ensure_future(ledger_loop(queue, stages, lambda b: acked.append(b.start), 2))
    await _spin()
    return task


async def test_next_batch_is_written_while_the_previous_one_publishes_and_acks_keep_order() -> None:
    queue: asyncio.Queue[Batch] = asyncio.Queue()
    stages, acked = Stages(), []
    for b in (batch(0), batch(2)):
        queue.put_nowait(b)
    task = await start(stages, queue, acked)
    assert stages.written == [[0, 1], [2, 3]]  # N+1 written before N's publish finished
    assert acked == []  # ...and nothing acked: N has not published
    stages.publishes[1].set_result(None)  # N+1 publishes first
    await _spin()
    assert acked == []  # still nothing: N comes first
    stages.publishes[0].set_result(None)
    await _spin()
    assert acked == [0, 2]  # N, then N+1 (nothing queued behind it: not held)
    task.cancel()


async def test_a_lone_batch_is_acked_once_published_without_waiting_for_another() -> None:
    queue: asyncio.Queue[Batch] = asyncio.Queue()
    stages, acked = Stages(), []
    task = await start(stages, queue, acked)
    queue.put_nowait(batch(0))
    await _spin()
    stages.publishes[0].set_result(None)
    await _spin()
    assert acked == [0]
    task.cancel()


async def test_a_failed_publish_leaves_it_and_every_later_batch_unacked() -> None:
    queue: asyncio.Queue[Batch] = asyncio.Queue()
    stages, acked = Stages(), []
    for b in (batch(0), batch(2), batch(4)):
        queue.put_nowait(b)
    task = await start(stages, queue, acked)
    stages.publishes[0].set_exception(Fatal("publish kept failing"))
    await _spin()
    stages.publishes[1].set_result(None)
    await _spin()
    assert acked == []
    assert [str(f) for f in stages.failed] == ["publish kept failing"]
    assert not task.done()  # holds the batches until the process stops
    task.cancel()


async def test_a_failed_write_is_fail_stop() -> None:
    queue: asyncio.Queue[Batch] = asyncio.Queue()
    stages, acked = Stages(write_error=RuntimeError("db bug")), []
    queue.put_nowait(batch(0))
    task = await start(stages, queue, acked)
    assert acked == [] and "db bug" in str(stages.failed[0])
    task.cancel()
