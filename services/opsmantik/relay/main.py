"""`opsmantik relay`: drain the outbox to Kafka until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

import uvloop

from opsmantik.config import Settings
from opsmantik.db.pool import create_pool
from opsmantik.relay.relay import Relay
from opsmantik.telemetry import metrics_http

log = logging.getLogger("opsmantik.relay")


def main(settings: Settings, args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    metrics_http.serve("relay", settings.metrics_host, settings.relay_metrics_port)
    # uvloop: cheaper wake-ups (the poll thread's hand-over) and socket I/O than the default loop.
    return uvloop.run(serve(settings))


async def serve(settings: Settings) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    pool = await create_pool(settings)
    relay = Relay(settings, pool)
    log.info("relay draining ingest_fallback_buffer to %s", settings.topic)
    try:
        await relay.run(stop)
    finally:
        await relay.close()
        await pool.close()
    return 0
