"""`opsmantik gateway [--host H] [--port P] [--workers N]`."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging

from aiohttp import web

from opsmantik.config import Settings
from opsmantik.gateway.app import create_app


async def freeze_startup_objects(app: web.Application) -> None:
    """After start-up (the last on_startup hook): move every object alive now (modules, the
    asyncpg pool, Prometheus, aiohttp, the status page) to the permanent generation, so the
    collector's full passes stop re-traversing them while requests allocate (issue 28)."""
    gc.collect()
    gc.freeze()


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
