"""`opsmantik worker`: run the Faust ledger app under a supervisor.

The supervisor (not faust.Worker) owns the loop so it can restart the consumer when the
watchdog sees a stall, stop cleanly on SIGTERM/SIGINT, and exit non-zero when a batch
cannot be committed. A periodic reconcile of the current and previous month (of the sites whose
invoice changed since the last pass: opsmantik.billing.reconcile) exports the billing drift metrics.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import uvloop

from opsmantik import months
from opsmantik.billing import reconcile
from opsmantik.config import Settings
from opsmantik.db.pool import create_pool
from opsmantik.kafka.topics import ensure_topics
from opsmantik.telemetry import metrics_http
from opsmantik.worker import metrics
from opsmantik.worker.app import build_app, drop_monitor
from opsmantik.worker.billable import BillablePublisher
from opsmantik.worker.processor import BatchProcessor
from opsmantik.worker.watchdog import OffsetProbe, StallDetector

log = logging.getLogger("opsmantik.worker")


def main(settings: Settings, args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    for noisy in ("faust", "aiokafka", "mode"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    ensure_topics(settings)  # Faust must not subscribe to a topic that does not exist yet
    metrics_http.serve("worker", settings.metrics_host, settings.worker_metrics_port)
    # uvloop: cheaper wake-ups and socket I/O than the default loop (Faust runs on the loop
    # it finds, the supervisor owns it; mode.loop.uvloop does no more than this policy).
    return uvloop.run(serve(settings))


async def _watch(
    settings: Settings, processor: BatchProcessor, probe: OffsetProbe, stop: asyncio.Event
) -> str:
    """Return "stalled" | "failed" | "stop" — whatever happens first."""
    detector = StallDetector(settings.worker_watchdog_s)
    detector.reset(time.monotonic())
    interval = max(settings.worker_watchdog_s / 6, 0.5)
    while True:
        if stop.is_set():
            return "stop"
        if processor.failed.is_set():
            return "failed"
        try:
            progress = await asyncio.to_thread(probe.read)
        except Exception as exc:  # the broker may be away; the consumer reports that itself
            log.warning("watchdog could not read offsets: %r", exc)
        else:
            metrics.CONSUMER_LAG.set(progress.lag)
            stalled = detector.observe(time.monotonic(), progress) and not processor.retrying
            metrics.STALLED.set(1 if stalled else 0)
            if stalled:
                log.error(
                    "WATCHDOG: committed offset stuck at %d for %.0fs while lag grew to %d; "
                    "restarting the consumer",
                    progress.committed,
                    settings.worker_watchdog_s,
                    progress.lag,
                )
                return "stalled"
        waiters = [asyncio.create_task(stop.wait()), asyncio.create_task(processor.failed.wait())]
        _done, pending = await asyncio.wait(waiters, timeout=interval, return_when=asyncio.FIRST_COMPLETED)
        for t in pending:
            t.cancel()


async def reconcile_once(pool: object, now: datetime | None = None) -> list[reconcile.MonthState]:
    """One periodic reconcile of the previous and current month: the incremental pass (the sites
    whose invoice changed since the last pass, and the drifting ones: opsmantik.billing.reconcile),
    its drifting sites recorded in reconcile_results, the gauges exported. A month whose pass runs
    in another worker (its lock held) exports the figures that pass left."""
    this_month = months.month_of(now or datetime.now(UTC))
    states = []
    for month in (months.previous_month(this_month), this_month):
        async with pool.acquire() as conn:  # type: ignore[attr-defined]
            state = await reconcile.incremental_pass(conn, month)
            if state is None:
                state = await reconcile.read_state(conn, month)
                if state is None:
                    continue
            elif state.drifting_sites:
                await reconcile.record(conn, reconcile.Report(month, state.run_at, state.drifting_sites))
        reconcile.export_state(state)
        states.append(state)
        if not state.ok:
            named = state.drifting[:20]
            more = len(state.drifting) - len(named)
            log.error(
                "billing drift in %s: sites %s%s",
                month,
                ", ".join(named),
                f" and {more} more" if more else "",
            )
    return states


async def _reconcile_loop(settings: Settings, pool: object) -> None:
    while True:
        try:
            await reconcile_once(pool)
        except Exception as exc:
            log.warning("periodic reconcile failed: %r", exc)
        await asyncio.sleep(settings.reconcile_interval_s)


async def serve(settings: Settings) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    instance = f"{socket.gethostname()}:{os.getpid()}"
    pool = await create_pool(settings)
    publisher = BillablePublisher(settings)
    processor = BatchProcessor(settings, pool, publisher, instance)
    probe = OffsetProbe(
        settings.kafka_bootstrap, settings.worker_group, settings.topic, settings.topic_partitions
    )
    reconciler = asyncio.create_task(_reconcile_loop(settings, pool))
    scratch = None if settings.worker_data_dir else tempfile.TemporaryDirectory(prefix="opsmantik-faust-")
    datadir = Path(scratch.name) if scratch else Path(settings.worker_data_dir)
    outcome = "stop"
    try:
        while True:
            app = build_app(settings, processor, datadir)
            await app.start()
            drop_monitor(app)
            log.info("worker %s consuming %s as group %s", instance, settings.topic, settings.worker_group)
            outcome = await _watch(settings, processor, probe, stop)
            try:  # bounded: a stop in the middle of a rebalance can hang; offsets are safe anyway
                await asyncio.wait_for(app.stop(), 15.0)
            except TimeoutError:
                log.warning("consumer did not stop within 15 s; leaving it (unacked messages replay)")
            if outcome != "stalled":
                break
            metrics.RESTARTS.inc()
    finally:
        reconciler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reconciler
        await publisher.close()
        await asyncio.to_thread(probe.close)
        await pool.close()
        if scratch:
            scratch.cleanup()
    return 1 if outcome == "failed" else 0
