"""The client against scripted answers: retries keep the same event_ids and honour the
server's waits; 400/401/413/415 are not retried and the caller gets per-event results."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from client_fake import fake_gateway, status
from opsmantik_client import AsyncClient, BatchLimits, Result
from opsmantik_client.retry import Backoff

FAST = Backoff(base_s=0.01, cap_s=0.05)


def client(url: str, tmp_path: Path, **kw: object) -> AsyncClient:
    kw.setdefault("backoff", FAST)
    return AsyncClient(url, "omk_test", spill_path=str(tmp_path / "spill.sqlite"), **kw)  # type: ignore[arg-type]


def events(n: int) -> list[dict]:
    return [{"type": "t", "occurred_at": "2026-01-01T00:00:00Z", "properties": {"i": i}} for i in range(n)]


async def test_retries_resend_the_same_event_ids_and_bytes(tmp_path: Path) -> None:
    async with fake_gateway([status(503), status(500), status(429)]) as gw:
        async with client(gw.url, tmp_path) as c:
            tickets = await c.send_many(events(5) + [{"event_id": "mine-1", "type": "t"}])
            assert await c.flush(10)
            results = [await t for t in tickets]
        assert len(gw.requests) == 4
        bodies = [r[1] for r in gw.requests]
        assert all(b == bodies[0] for b in bodies)  # ids generated once, kept across retries
        assert [r.event_id for r in results] == [e["event_id"] for e in bodies[0]]
        assert results[-1].event_id == "mine-1"
        assert all(r.status == "accepted" and r.receipt is not None for r in results)
        assert c.counters.retried == 3 * 6 and c.counters.sent == 6


async def test_retry_after_and_ratelimit_reset_are_honoured(tmp_path: Path) -> None:
    script = [
        status(429, {"Retry-After": "0.4"}),
        status(503, {"RateLimit-Remaining": "0", "RateLimit-Reset": "0.3"}),
    ]
    async with fake_gateway(script) as gw, client(gw.url, tmp_path) as c:
        await c.send_many(events(3))
        assert await c.flush(10)
    (t0, _), (t1, _), (t2, _) = gw.requests
    assert t1 - t0 >= 0.4
    assert t2 - t1 >= 0.3


async def test_a_400_rejects_only_the_events_it_names_and_sends_the_rest_again(tmp_path: Path) -> None:
    bad = status(
        400,
        body={"error": "invalid_request", "details": [{"index": 1, "field": "type", "message": "required"}]},
    )
    got: list[Result] = []
    async with fake_gateway([bad]) as gw, client(gw.url, tmp_path, on_result=got.append) as c:
        tickets = await c.send_many(events(3))
        assert await c.flush(10)
        results = [await t for t in tickets]
    assert [r.status for r in results] == ["accepted", "rejected", "accepted"]
    assert results[1].error == "type: required" and results[1].http_status == 400
    assert results[1].body is not None and b'"i":1' in results[1].body
    assert [e["properties"]["i"] for e in gw.requests[1][1]] == [0, 2]
    assert sorted(r.event_id for r in got) == sorted(r.event_id for r in results)
    assert c.counters.rejected == 1 and c.counters.retried == 0


async def test_401_and_415_are_not_retried(tmp_path: Path) -> None:
    for code in (401, 415):
        async with fake_gateway([status(code)]) as gw, client(gw.url, tmp_path / str(code)) as c:
            tickets = await c.send_many(events(4))
            assert await c.flush(10)
            results = [await t for t in tickets]
        assert len(gw.requests) == 1
        assert {r.status for r in results} == {"rejected"}
        assert results[0].error == f"{code} e{code}"


async def test_413_splits_the_batch_and_rejects_a_single_event(tmp_path: Path) -> None:
    async with fake_gateway([status(413), status(413)]) as gw, client(gw.url, tmp_path) as c:
        tickets = await c.send_many(events(2))
        assert await c.flush(10)
        results = [await t for t in tickets]
    assert [len(r[1]) for r in gw.requests] == [2, 1, 1]
    assert [r.status for r in results] == ["rejected", "accepted"]


async def test_connection_refused_is_retried_until_the_gateway_appears(tmp_path: Path) -> None:
    async with fake_gateway() as gw:
        url = gw.url
    # the port is closed now; a client keeps the events and retries
    c = client(url, tmp_path)
    await c.send_many(events(2))
    assert not await c.flush(0.3)
    assert c.counters.failures >= 2 and c.pending == 2
    assert not await c.close(0.1)
    assert c.pending_after_close == 2


async def test_batches_respect_max_events_and_linger(tmp_path: Path) -> None:
    limits = BatchLimits(max_events=4, linger_s=0.2)
    async with fake_gateway() as gw, client(gw.url, tmp_path, limits=limits) as c:
        t0 = time.monotonic()
        await c.send_many(events(5))
        await asyncio.sleep(0.5)  # no flush: the fifth event waits for company, then goes
        assert c.pending == 0
    assert [len(r[1]) for r in gw.requests] == [4, 1]
    assert gw.requests[0][0] - t0 < 0.2  # a full batch does not linger
    assert gw.requests[1][0] - t0 >= 0.2
