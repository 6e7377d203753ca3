"""The load generator holds a 200 to every event it sent: against a gateway stand-in whose 200s
drop the last event of each batch, every sent event still counts as acknowledged ("missing"
outcome) and each such 200 is recorded, so the checker fails the run (a 200 hiding a loss)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from tests.chaos.loadgen import LoadConfig, LoadGenerator


async def test_a_200_missing_an_event_is_caught() -> None:
    async def sync(request: web.Request) -> web.Response:
        events = (await request.json())["events"]
        listed = events[:-1] if len(events) > 1 else events  # the bug: the last event left out
        return web.json_response(
            {
                "results": [
                    {
                        "event_id": e["event_id"],
                        "status": "accepted",
                        "receipt": {"partition": 0, "offset": 0},
                    }
                    for e in listed
                ]
            }
        )

    app = web.Application()
    app.router.add_post("/api/sync", sync)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        load = LoadGenerator(
            LoadConfig("k", [f"http://127.0.0.1:{port}"], seed=7, clients=2, events_per_s=400.0)
        )
        await load.start()
        await asyncio.sleep(0.5)
        record = await load.stop(grace_s=2.0)
    finally:
        await runner.cleanup()
    assert set(record.acked) == record.sent  # every sent event was answered by a 200
    multi = [b for b in record.bad_200 if len(b.sent) > 1]
    assert multi and all(b.listed == b.sent[:-1] for b in multi)
    assert {record.acked[b.sent[-1]] for b in multi} == {"missing"}
    assert len(record.bad_200) == sum(1 for b in record.bad_200 if len(b.sent) > 1)
