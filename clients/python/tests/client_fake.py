"""A scripted stand-in for POST /api/sync, to test the client's handling of each answer.
(The real gateway is used in tests/integration/test_client*.py.)"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web

Answer = Callable[[list[dict]], web.Response]


def ok(events: list[dict]) -> web.Response:
    return web.json_response(
        {
            "results": [
                {"event_id": e["event_id"], "status": "accepted", "receipt": {"partition": 0, "offset": i}}
                for i, e in enumerate(events)
            ]
        }
    )


def status(code: int, headers: dict[str, str] | None = None, body: object = None) -> Answer:
    return lambda _events: web.json_response(body or {"error": f"e{code}"}, status=code, headers=headers)


@dataclass
class FakeGateway:
    script: list[Answer] = field(default_factory=list)  # answers for the next requests, then ok
    requests: list[tuple[float, list[dict]]] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        events = json.loads(await request.read())["events"]
        self.requests.append((time.monotonic(), events))
        answer = self.script.pop(0) if self.script else ok
        return answer(events)


@asynccontextmanager
async def fake_gateway(script: list[Answer] | None = None) -> AsyncIterator[FakeGateway]:
    fake = FakeGateway(list(script or []))
    app = web.Application()
    app.router.add_post("/api/sync", fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    fake.url = f"http://127.0.0.1:{port}"
    try:
        yield fake
    finally:
        await runner.cleanup()
