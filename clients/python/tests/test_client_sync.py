"""The blocking twin: the same client on its own thread; send() returns once spilled, a ticket's
result() blocks until the answer, close() leaves nothing behind."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from client_fake import fake_gateway
from opsmantik_client import Client, Result


def produce(url: str, spill: Path) -> tuple[Result, list[Result], int, int]:
    with Client(url, "omk_test", spill_path=str(spill)) as c:
        one = c.send({"type": "t", "occurred_at": "2026-01-01T00:00:00Z"})
        many = c.send_many([{"event_id": f"s-{i}", "type": "t"} for i in range(5)])
        first = one.result(timeout=10)
        assert c.flush(10)
        return first, [t.result(timeout=1) for t in many], c.counters.sent, c.pending


async def test_sync_client_sends_and_reports(tmp_path: Path) -> None:
    async with fake_gateway() as gw:
        first, many, sent, pending = await asyncio.to_thread(produce, gw.url, tmp_path / "s")
    assert first.status == "accepted" and first.receipt == {"partition": 0, "offset": 0}
    assert [r.event_id for r in many] == [f"s-{i}" for i in range(5)]
    assert sent == 6 and pending == 0
    assert not [t for t in threading.enumerate() if t.name == "opsmantik-client"]  # ended by close()
