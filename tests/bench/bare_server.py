"""Baseline: a bare aiohttp handler that parses the same JSON (orjson) and answers 200.

`python -m tests.bench.bare_server --port P [--uvloop]`: the ceiling the gateway is compared with.
"""

from __future__ import annotations

import argparse
import asyncio

import orjson
from aiohttp import web

OK = b'{"ok":true}'


async def sync(request: web.Request) -> web.Response:
    body = orjson.loads(await request.read())
    if not isinstance(body, dict):
        return web.Response(status=400)
    return web.Response(body=OK, content_type="application/json")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--uvloop", action="store_true")
    args = parser.parse_args()
    if args.uvloop:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    app = web.Application()
    app.router.add_post("/api/sync", sync)
    web.run_app(app, host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
