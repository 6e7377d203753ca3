"""`opsmantik gateway [--host H] [--port P] [--workers N]`."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging

from aiohttp import web

from opsmantik.config import Settings
from opsmantik.gateway.app import create_app

# Generation 0's threshold once started (CPython's default 700). The request path makes no
# reference cycles (a 12 s flood at 128 connections: 787 generation-0 passes, 0 objects
# collected), yet it ran a pass every ~38 requests: each pass re-traversed the requests in flight
# (≈ 0.65 ms) for nothing, 17-23 µs per request with generations 1 and 2 (issue 28,
# docs/results/2026-12-07-gateway-single.md). A pass now waits for this many more container objects
# than were freed: whatever cycle does form (a rare error's traceback) is still collected, after at
# most this many allocations, so memory stays bounded (RSS over a 60 s run in the results file).
GEN0_THRESHOLD = 10_000


async def freeze_startup_objects(app: web.Application) -> None:
    """After start-up (the last on_startup hook): move every object alive now (modules, the
    asyncpg pool, Prometheus, aiohttp, the status page) to the permanent generation, so the
    collector's full passes stop re-traversing them while requests allocate, and raise generation
    0's threshold to GEN0_THRESHOLD (generations 1 and 2 keep theirs) (issue 28)."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)


def main(settings: Settings, args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    host = getattr(args, "host", None) or settings.gateway_host
    port = getattr(args, "port", None) or settings.gateway_port
    workers = getattr(args, "workers", None) or 1
    if workers > 1:
        from opsmantik.gateway.prefork import supervise

        return supervise(host, port, workers)
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    app = create_app(settings)
    app.on_startup.append(freeze_startup_objects)  # after create_app's own start-up hooks
    web.run_app(
        app,
        host=host,
        port=port,
        access_log=None,
        reuse_port=bool(getattr(args, "reuse_port", False)),
        print=lambda msg: logging.getLogger("opsmantik.gateway").info(msg),
    )
    return 0
