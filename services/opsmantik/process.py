"""What the long-running processes `opsmantik relay` and `opsmantik dispatcher` share: their start
(log lines in one format, the /metrics + /healthz endpoint) and their run until SIGTERM/SIGINT
(a pool, the service's loop, then its close and the pool's). Each keeps its own class and loop."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from typing import Protocol

import asyncpg

from opsmantik.config import Settings
from opsmantik.db.pool import create_pool
from opsmantik.telemetry import metrics_http

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class Service(Protocol):
    async def run(self, stop: asyncio.Event) -> None: ...

    async def close(self) -> None: ...


def start(name: str, settings: Settings, metrics_port: int) -> None:
    """INFO logging to stderr and the metrics endpoint (port 0: ephemeral, -1: off)."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    metrics_http.serve(name, settings.metrics_host, metrics_port)


def stop_on_signals() -> asyncio.Event:
    """An event SIGTERM or SIGINT sets (the running loop's handlers: call it inside the loop)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def run_until_stopped(settings: Settings, make: Callable[[Settings, asyncpg.Pool], Service]) -> int:
    """The service `make` builds, run until a signal, then closed, then its pool; exit code 0."""
    stop = stop_on_signals()
    pool = await create_pool(settings)
    service = make(settings, pool)
    try:
        await service.run(stop)
    finally:
        await service.close()
        await pool.close()
    return 0
