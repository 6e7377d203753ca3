"""The spill: bounded by its configured size (the caller is told, blocked or, by choice, its
events dropped), survives the process, one process at a time, memory window and replay order."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from client_fake import fake_gateway
from opsmantik_client import AsyncClient, MetricsHooks, SpillFull, SpillLocked, _json
from opsmantik_client.batching import GATEWAY_MAX_BYTES
from opsmantik_client.retry import Backoff
from opsmantik_client.spill import Spill

DEAD = "http://127.0.0.1:9"  # discard port: nothing listens, every request fails at once
SLOW = Backoff(base_s=5.0, cap_s=5.0)  # keep events pending during the test


def event(i: int, pad: int = 0) -> dict:
    return {"event_id": f"e-{i:06d}", "type": "t", "properties": {"p": "x" * pad}}


def size(i: int, pad: int = 0) -> int:
    return len(_json.dumps(event(i, pad)))


async def test_raise_at_exactly_the_configured_size(tmp_path: Path) -> None:
    one = size(0, 1000)
    cap = GATEWAY_MAX_BYTES  # the smallest spill allowed (one full batch)
    n = cap // one
    rest = cap - n * one
    c = AsyncClient(
        DEAD, "k", spill_path=str(tmp_path / "s"), spill_max_bytes=cap, on_full="raise", backoff=SLOW
    )
    await c.send_many([event(i, 1000) for i in range(n)])
    filler = {"event_id": "f", "type": "t", "properties": {"p": ""}}
    pad = rest - len(_json.dumps(filler))
    await c.send_many([{**filler, "properties": {"p": "y" * pad}}])  # exactly full: accepted
    assert c._spill.bytes == cap
    with pytest.raises(SpillFull, match="not yet acknowledged"):
        await c.send(event(n + 1, 0))  # one more byte than fits: the caller is told
    assert c._spill.bytes == cap and c.pending == n + 1
    await c.close(0.1)


async def test_block_waits_for_room_then_gives_up_after_its_timeout(tmp_path: Path) -> None:
    c = AsyncClient(
        DEAD,
        "k",
        spill_path=str(tmp_path / "s"),
        spill_max_bytes=GATEWAY_MAX_BYTES,
        on_full="block",
        block_timeout_s=0.3,
        backoff=SLOW,
    )
    await c.send_many([event(i, 1000) for i in range(900)])  # 950 KB of 1 MiB
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    with pytest.raises(SpillFull, match="still full after 0.3 s"):
        await c.send(event(5000, 100_000))
    assert loop.time() - t0 >= 0.3
    await c.close(0.1)


async def test_block_resumes_when_the_gateway_answers(tmp_path: Path) -> None:
    async with fake_gateway() as gw:
        c = AsyncClient(
            gw.url, "k", spill_path=str(tmp_path / "s"), spill_max_bytes=GATEWAY_MAX_BYTES, on_full="block"
        )
        for k in range(5):  # five spills' worth through a spill of one
            await c.send_many([event(k * 1000 + i, 1000) for i in range(900)])
        assert await c.flush(10)
        assert c.counters.sent == 4500 and c.counters.dropped == 0
        await c.close()


async def test_drop_is_counted_and_reported_only_when_chosen(tmp_path: Path) -> None:
    dropped: list[int] = []

    class Hooks(MetricsHooks):
        def dropped(self, n: int) -> None:
            dropped.append(n)

    c = AsyncClient(
        DEAD,
        "k",
        spill_path=str(tmp_path / "s"),
        spill_max_bytes=GATEWAY_MAX_BYTES,
        on_full="drop",
        backoff=SLOW,
        hooks=Hooks(),
    )
    await c.send_many([event(i, 1000) for i in range(900)])  # 950 KB of 1 MiB
    tickets = await c.send_many([event(9999, 100_000)])
    assert (await tickets[0]).status == "dropped"
    assert c.counters.dropped == 1 and dropped == [1]
    await c.close(0.1)


async def test_unanswered_events_and_the_checkpoint_survive_into_the_next_client(tmp_path: Path) -> None:
    path = str(tmp_path / "s")
    c = AsyncClient(DEAD, "k", spill_path=path, backoff=SLOW)
    sent = await c.send_many([{"type": "t"} for _ in range(10)], checkpoint={"next": "10"})
    assert not await c.close(0.1)
    async with fake_gateway() as gw:
        c2 = AsyncClient(gw.url, "k", spill_path=path)
        await c2.start()
        assert c2.checkpoint() == {"next": "10"} and c2.pending == 10
        assert c2.counters.spilled == 10
        assert await c2.flush(10)
        await c2.close()
    assert [e["event_id"] for e in gw.requests[0][1]] == [t.event_id for t in sent]


async def test_one_process_per_spill(tmp_path: Path) -> None:
    path = str(tmp_path / "s")
    c = AsyncClient(DEAD, "k", spill_path=path, backoff=SLOW)
    await c.start()
    with pytest.raises(SpillLocked):
        await AsyncClient(DEAD, "k", spill_path=path).start()
    await c.close(0.1)
    c3 = AsyncClient(DEAD, "k", spill_path=path)  # free again after close
    await c3.start()
    await c3.close(0.1)


async def test_events_past_the_memory_window_are_read_back_in_order(tmp_path: Path) -> None:
    async with fake_gateway() as gw:
        c = AsyncClient(
            gw.url, "k", spill_path=str(tmp_path / "s"), memory_max_bytes=GATEWAY_MAX_BYTES, max_in_flight=1
        )
        ids = [
            t.event_id
            for k in range(6)
            for t in await c.send_many([event(k * 1000 + i, 600) for i in range(1000)])
        ]
        assert c.counters.spilled > 0
        assert await c.flush(20)
        await c.close()
    assert [e["event_id"] for _, evs in gw.requests for e in evs] == ids


def test_sequence_numbers_never_go_back_and_removal_takes_exactly_its_events(tmp_path: Path) -> None:
    s = Spill(tmp_path / "s", 10_000)
    first = s.append([(f"e{i}", b"{}") for i in range(6)])
    s.remove([first + 1, first + 2, first + 3], 6)  # consecutive: one range statement
    s.remove([first, first + 5], 4)  # not consecutive: one by one
    assert [r.event_id for r in s.read(0, 10)] == ["e4"] and s.count == 1 and s.bytes == 2
    s.remove([first + 4], 2)
    assert s.count == 0
    assert s.append([("c", b"{}")]) == first + 6  # an emptied table does not reuse numbers
    s.close()
    again = Spill(tmp_path / "s", 10_000)  # a restarted producer continues after the last one
    assert again.first_seq == first + 6 and again.append([("d", b"{}")]) == first + 7
    again.close()
