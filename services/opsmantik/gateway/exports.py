"""GET /api/billing/dispute-export: the caller's own ledger entries for a month, streamed, with
the verifiable summary last (services/opsmantik/billing/export.py, docs/billing.md).

A slow download must not hold a connection that ingest needs: exports read through their own
small pool (OPSMANTIK_EXPORT_MAX_TOTAL connections) and at most OPSMANTIK_EXPORT_MAX_PER_SITE run
per site; beyond either limit the answer is 429 `too_many_exports` with Retry-After, never a wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import Counter
from dataclasses import dataclass, field

import asyncpg
from aiohttp import web

from opsmantik.billing.export import export_chunks, invoice_and_statement
from opsmantik.config import Settings
from opsmantik.gateway.routes_api import authenticate, query_month
from opsmantik.gateway.state import STATE, error, invalid_query
from opsmantik.months import label

log = logging.getLogger("opsmantik.gateway.exports")
RETRY_AFTER_S = 5


@dataclass
class ExportGate:
    max_per_site: int
    max_total: int
    pool: asyncpg.Pool | None = None
    running: Counter[uuid.UUID] = field(default_factory=Counter)

    def try_acquire(self, site: uuid.UUID) -> bool:
        if sum(self.running.values()) >= self.max_total or self.running[site] >= self.max_per_site:
            return False
        self.running[site] += 1
        return True

    def release(self, site: uuid.UUID) -> None:
        self.running[site] -= 1
        if self.running[site] <= 0:
            del self.running[site]


EXPORTS: web.AppKey[ExportGate] = web.AppKey("exports", ExportGate)


async def dispute_export(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    site = await authenticate(request, state)
    if isinstance(site, web.Response):
        return site
    month = query_month(request)  # the one month parser (services/opsmantik/months.py)
    if isinstance(month, web.Response):
        return month
    fmt = request.query.get("format", "csv")
    if fmt not in ("csv", "ndjson"):
        return invalid_query("format", "expected csv or ndjson")
    gate = request.app[EXPORTS]
    if gate.pool is None or not gate.try_acquire(site.site_id):
        return error(
            429,
            "too_many_exports",
            f"at most {gate.max_per_site} exports per site and {gate.max_total} in total at once; "
            "retry later",
            {"Retry-After": str(RETRY_AFTER_S)},
        )
    response: web.StreamResponse | None = None
    try:
        async with (
            gate.pool.acquire(timeout=2.0) as conn,
            conn.transaction(readonly=True, isolation="repeatable_read"),
        ):
            invoice, statement = await invoice_and_statement(conn, site.site_id, month)
            response = web.StreamResponse(
                headers={
                    "Content-Type": "text/csv; charset=utf-8" if fmt == "csv" else "application/x-ndjson",
                    "Content-Disposition": f'attachment; filename="ledger-{label(month)}.{fmt}"',
                    "X-Invoice-Events": str(invoice["events"] if invoice else 0),
                    "X-Invoice-Quantity": str(invoice["quantity"] if invoice else 0),
                    **({"X-Statement-SHA256": statement["sha256"]} if statement else {}),
                }
            )
            await response.prepare(request)
            async for chunk in export_chunks(conn, site.site_id, month, fmt, invoice, statement):
                await response.write(chunk)
        await response.write_eof()
        return response
    except Exception:
        if response is None or not response.prepared:
            raise  # nothing sent yet: the middleware answers 503
        # Mid-stream: cut the connection so the client sees an incomplete download (and verify
        # finds no summary line), never a clean end of a truncated export.
        log.warning(
            "dispute export of %s for %s aborted mid-stream", site.site_id, label(month), exc_info=True
        )
        if request.transport is not None:
            request.transport.abort()
        return response
    finally:
        gate.release(site.site_id)


def setup(app: web.Application, settings: Settings) -> None:
    gate = ExportGate(settings.export_max_per_site, settings.export_max_total)
    app[EXPORTS] = gate

    async def startup(_app: web.Application) -> None:
        # Its own pool: a slow download holds one of these, never an ingest connection.
        gate.pool = await asyncpg.create_pool(
            settings.database_url, min_size=0, max_size=settings.export_max_total, timeout=2.0
        )

    async def cleanup(_app: web.Application) -> None:
        if gate.pool is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(gate.pool.close(), 3.0)

    app.on_startup.append(startup)
    app.on_cleanup.append(cleanup)
    app.router.add_get("/api/billing/dispute-export", dispute_export)
