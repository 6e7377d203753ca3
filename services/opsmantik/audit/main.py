"""`opsmantik audit [--month YYYY-MM] [--json] [--wait S]` and `opsmantik audit --follow`.

--follow   the continuous audit: a cycle every audit_interval_s (back to back while behind),
           metrics on audit_metrics_port (0 = an ephemeral port, written to the log). Total:
           a broker or database away is logged and retried, never a crash.
--month    one-shot (the default; the current UTC month when --month is left out): waits
           (<= --wait s, default audit_wait_s) for the worker group to commit what the topic held
           at the start (it stops waiting once the committed offsets stand still
           for 3 s: no worker running), runs cycles until audited up to those offsets (the same
           cycles and tables as --follow, serialised by an advisory lock), then returns the month
           from the tables (the CLI prints it and chooses the exit code: services/opsmantik/cli/
           reports.py); an engine that cannot be reached raises Unreachable (exit 3).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from datetime import date

import asyncpg
from confluent_kafka import KafkaException
from prometheus_client import start_http_server

from opsmantik.audit import metrics
from opsmantik.audit.auditor import Auditor
from opsmantik.audit.reader import ReadError
from opsmantik.audit.report import MonthAudit, month_audit
from opsmantik.config import Settings, database_hosts
from opsmantik.errors import Unavailable

log = logging.getLogger("opsmantik.audit")
VANISHED_EVERY_S = 60.0
IDLE_STOP_S = 3.0  # committed offsets unchanged this long: the worker is idle or absent


class Unreachable(Unavailable, RuntimeError):
    pass


def _where(settings: Settings) -> str:
    # host:port only (the URL may hold a password); every host of a multi-host URL
    return ",".join(f"{h}:{p}" for h, p in database_hosts(settings.database_url))


async def _pool(settings: Settings) -> asyncpg.Pool:
    try:
        return await asyncpg.create_pool(settings.database_url, min_size=1, max_size=2, timeout=10)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
        raise Unreachable(
            f"cannot reach Postgres at {_where(settings)} ({type(exc).__name__}); "
            "start the local stack with `opsmantik stack up`"
        ) from exc


def _kafka_unreachable(settings: Settings, exc: BaseException) -> Unreachable:
    return Unreachable(
        f"cannot read the topic {settings.topic} from Kafka at {settings.kafka_bootstrap} "
        f"({exc}); start the local stack with `opsmantik stack up`"
    )


async def _wait_for_worker(auditor: Auditor, wait_s: float) -> None:
    start = await auditor.bounds()
    target = {p: b.high for p, b in start.items()}
    last = {p: b.committed for p, b in start.items()}
    deadline = time.monotonic() + wait_s
    still_since = time.monotonic()
    while time.monotonic() < deadline:
        if all(last.get(p, 0) >= t for p, t in target.items()):
            return
        await asyncio.sleep(0.25)
        now = {p: b.committed for p, b in (await auditor.bounds()).items()}
        if now != last:
            last, still_since = now, time.monotonic()
        elif time.monotonic() - still_since >= IDLE_STOP_S:
            return


async def one_shot(settings: Settings, month: date, wait_s: float) -> MonthAudit:
    pool = await _pool(settings)
    auditor: Auditor | None = None
    try:
        try:
            auditor = Auditor(settings, pool)
            await _wait_for_worker(auditor, wait_s)
            await auditor.catch_up()
        except (KafkaException, ReadError) as exc:
            raise _kafka_unreachable(settings, exc) from exc
        vanished = await auditor.vanished()
        async with pool.acquire() as conn:
            audit = await month_audit(conn, settings.topic, month, vanished)
    finally:
        if auditor is not None:
            await asyncio.to_thread(auditor.close)
        await pool.close()
    return audit


async def refresh(settings: Settings, pool: asyncpg.Pool) -> str | None:
    """One catch-up without waiting (slo-report); the problem as text when Kafka is away."""
    auditor = Auditor(settings, pool)
    try:
        await auditor.catch_up()
        return None
    except (KafkaException, ReadError) as exc:
        return str(_kafka_unreachable(settings, exc))
    finally:
        await asyncio.to_thread(auditor.close)


async def follow(settings: Settings) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server, _thread = start_http_server(settings.audit_metrics_port, addr=settings.metrics_host)
    log.info("audit metrics on http://127.0.0.1:%d/metrics", server.server_port)
    log.info(
        "auditing %s behind worker group %s (audit group %s)",
        settings.topic,
        settings.worker_group,
        settings.audit_group,
    )
    pool: asyncpg.Pool | None = None
    auditor: Auditor | None = None
    delay = settings.audit_interval_s
    next_vanished = 0.0
    try:
        while not stop.is_set():
            try:
                pool = pool or await _pool(settings)
                auditor = auditor or Auditor(settings, pool)
                result = await auditor.cycle()
                if time.monotonic() >= next_vanished:  # a full ledger scan: about once a minute
                    await auditor.vanished()
                    next_vanished = time.monotonic() + VANISHED_EVERY_S
                metrics.CYCLES.labels("ok" if result is not None else "locked").inc()
                busy = result is not None and result.audited > 0 and not result.caught_up
                delay = 0.0 if busy else settings.audit_interval_s
            except Exception as exc:  # the audit itself must be total: log, back off, retry
                metrics.CYCLES.labels("error").inc()
                log.warning(
                    "audit cycle failed (%s); retrying", exc if isinstance(exc, Unreachable) else repr(exc)
                )
                if auditor is not None:
                    await asyncio.to_thread(auditor.close)
                    auditor = None
                delay = min(max(delay * 2, 1.0), 10.0)
            if delay:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
    finally:
        if auditor is not None:
            await asyncio.to_thread(auditor.close)
        if pool is not None:
            await pool.close()
        server.shutdown()
    return 0
