"""The aiohttp application: `create_app(settings)` wires caches, breaker and publishers.

Route handlers live in routes_*.py; they see the gateway only through `State` (and the Publisher
seam), never through Kafka directly. They import services/opsmantik/gateway/state.py (State, STATE, the JSON
answers), never this module: app imports the routes (tests/unit/test_import_cycles.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

import asyncpg
from aiohttp import hdrs, web

from opsmantik.config import LOCAL_KEY_SECRET, Settings
from opsmantik.events import Limits
from opsmantik.gateway import (
    exports,
    routes_api,
    routes_cloudevents,
    routes_dashboard,
    routes_events,
    routes_meters,
    routes_ops,
)
from opsmantik.gateway.auth import KeyCache, LookupBudget, RefusalPacer
from opsmantik.gateway.breaker import STATE_VALUE, Breaker
from opsmantik.gateway.metrics import GatewayMetrics
from opsmantik.gateway.publisher import (
    FallbackPublisher,
    KafkaPublisher,
    OutboxPublisher,
    Publisher,
)
from opsmantik.gateway.quota import UsageCache
from opsmantik.gateway.ratelimit import RateLimiter
from opsmantik.gateway.registry import GatewayRegistry
from opsmantik.gateway.rollup import SloRollup
from opsmantik.gateway.state import OUTCOMES, STATE, State, error
from opsmantik.status.snapshot import StatusRefresher

__all__ = ["STATE", "State", "create_app"]
from opsmantik.gateway.sla_rollup import LIMIT, SITE, SLA, SlaRollup
from opsmantik.gateway.sla_rollup import start as sla_start
from opsmantik.gateway.sla_rollup import stop as sla_stop

log = logging.getLogger("opsmantik.gateway")
SLO_FLUSH_S = 5.0
BREAKER_COOLDOWN_S = 1.0
# The ingest routes: their answers feed the SLO and per-site SLA rollups.
INGEST_ROUTES = {"/api/sync", routes_cloudevents.PATH}
KNOWN_ROUTES = {
    *INGEST_ROUTES,
    "/api/usage",
    "/api/billing/dispute-export",
    routes_events.ITEM,  # the label of every GET /api/v1/events/{event_id}
    "/healthz",
    "/readyz",
    "/metrics",
    "/status",
    "/status.json",
    *routes_dashboard.ROUTES,
}


def route_label(path: str) -> str:
    """The `route` label of a request's metrics: its path when known, else "other"."""
    if path in KNOWN_ROUTES:
        return path
    if path.startswith(routes_cloudevents.PATH + "/"):
        return routes_events.ITEM
    return "other"


@web.middleware
async def observe(request: web.Request, handler):  # type: ignore[no-untyped-def]
    """Metrics for every request; any unexpected exception becomes a 503 (retry is safe), never 500."""
    started = time.perf_counter()
    route = route_label(request.path)
    try:
        response = await handler(request)
    except web.HTTPException as exc:  # 404/405 and friends: aiohttp's own 4xx
        response = exc
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unhandled error on %s %s", request.method, route)
        response = unexpected()
    return observed(request, route, response, started)


def unexpected() -> web.Response:
    return error(503, "unavailable", "temporary failure; retrying is safe", {"Retry-After": "1"})


def observed(
    request: web.Request, route: str, response: web.StreamResponse, started: float, ingest: bool | None = None
) -> web.StreamResponse:
    """The answer's metrics and rollups, then the answer (an HTTPException's as our JSON error).
    `ingest`: whether it is a POST of an ingest route (None: decided here)."""
    elapsed = time.perf_counter() - started
    app = request.app
    state = app[STATE]
    status = response.status
    state.metrics.request_done(route, status, elapsed)
    if ingest is None:
        ingest = route in INGEST_ROUTES and request.method == "POST"  # GET /api/v1/events: a read
    if ingest:
        # what request.get(OUTCOMES), .get(SITE) and .get(LIMIT) read, without two Python calls
        # each (aiohttp's per-request dict; aiohttp is pinned)
        stored = request._state
        state.rollup.record(status, elapsed, stored.get(OUTCOMES))
        site = stored.get(SITE)
        if site is not None:  # the SLA's rule: which limit answered matters to a 429 only
            app[SLA].record(site, status, stored.get(LIMIT) if status == 429 else None)
    if isinstance(response, web.HTTPException) and response.status >= 400:
        # A 405 keeps aiohttp's `Allow` (RFC 9110 requires it); the body becomes our JSON error.
        allow = {"Allow": response.headers["Allow"]} if "Allow" in response.headers else None
        return error(response.status, response.reason.lower().replace(" ", "_"), response.reason, allow)
    return response


Handle = Callable[[web.Request], Awaitable[web.StreamResponse]]


def dispatch_ingest_first(app: web.Application, routes: Sequence[tuple[web.AbstractRoute, Handle]]) -> None:
    """POST /api/sync and POST /api/v1/events without the router and the middleware chain (issue 28).

    aiohttp serves every request through `app._handle`: the router's resolve (two coroutines and a
    new match info per request), then the middleware chain (`observe` wrapped in aiohttp's
    current-app fix-up). For a request whose method is POST and whose raw path is exactly one of
    `routes`' paths, with no `Expect` header, this `_handle` runs the route's handler at once, with
    a match info built once (the one the router would give: the route, no parameters, this app) and
    `observe`'s very code around it: the same handler (or the coroutine function given with the
    route, which the route's handler awaits: one frame less), the same metrics and rollups, the same answer
    to an exception. Every other request (another path or method, a query string, an escaped path,
    `Expect: 100-continue`) goes through aiohttp's `_handle` exactly as before. aiohttp is pinned
    (pyproject.toml); tests/integration/test_gateway_dispatch.py checks the fast path is taken and
    answers as the router's path does.
    """
    general: Handle = app._handle
    table: dict[str, tuple[Handle, web.UrlMappingMatchInfo]] = {}
    for route, direct in routes:
        assert route.method == "POST" and route.resource is not None
        info = web.UrlMappingMatchInfo({}, route)
        info.add_app(app)
        info.freeze()
        table[route.resource.canonical] = (direct, info)

    async def handle(request: web.Request) -> web.StreamResponse:
        entry = table.get(request.raw_path) if request.method == "POST" else None
        if entry is None or request.headers.get(hdrs.EXPECT):
            return await general(request)
        handler, request._match_info = entry
        started = time.perf_counter()
        route = request.raw_path
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            response = exc
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("unhandled error on %s %s", request.method, route)
            response = unexpected()
        return observed(request, route, response, started, True)

    app._handle = handle  # type: ignore[method-assign]


def create_app(settings: Settings, publisher: Publisher | None = None) -> web.Application:
    """The gateway. With `publisher` given (tests), no Kafka producer is created."""
    app = web.Application(middlewares=[observe], client_max_size=settings.max_body_bytes)
    ingest = [routes_api.setup(app), routes_cloudevents.setup(app)]
    routes_events.setup(app)
    routes_dashboard.setup(app)
    routes_meters.setup(app)
    routes_ops.setup(app)
    exports.setup(app, settings)
    app[SLA] = SlaRollup()

    async def startup(app: web.Application) -> None:
        # min_size=0: the gateway starts (and serves known keys via Kafka) with Postgres down.
        pool = await asyncpg.create_pool(
            settings.database_url, min_size=0, max_size=settings.db_pool_max, timeout=2.0
        )
        metrics = GatewayMetrics()
        if settings.key_secret == LOCAL_KEY_SECRET:
            log.warning("OPSMANTIK_KEY_SECRET is the local-dev default: set a secret in production")
        breaker = Breaker(cooldown_s=BREAKER_COOLDOWN_S)
        breaker.on_change(lambda s: metrics.breaker_state.set(STATE_VALUE[s]))
        breaker.on_change(lambda s: metrics.breaker_trips.inc() if s == "open" else None)
        kafka: KafkaPublisher | None = None
        pub = publisher
        if pub is None:
            kafka = KafkaPublisher(settings, on_error=breaker.failure)
            kafka.start(asyncio.get_running_loop())
            pub = FallbackPublisher(kafka, OutboxPublisher(pool), breaker)
        state = State(
            settings,
            pool,
            KeyCache(
                pool,
                settings.key_cache_ttl_s,
                settings.unknown_key_ttl_s,
                secrets=tuple(x for x in (settings.key_secret, settings.key_secret_previous) if x),
                legacy_keys=settings.legacy_keys == "on",
                budget=LookupBudget(settings.unknown_key_lookups_per_s, settings.unknown_key_lookup_burst),
                on_refused=metrics.auth_refused,
                pacer=RefusalPacer(settings.auth_failures_undelayed_per_s, settings.auth_failure_delay_s),
            ),
            UsageCache(settings.usage_stale_s),
            RateLimiter(),
            breaker,
            metrics,
            SloRollup(),
            pub,
            kafka,
            Limits(max_events=settings.max_batch_events),
            GatewayRegistry(settings.gateway_heartbeat_s, settings.gateway_dead_after_s),
            StatusRefresher(settings, lambda: breaker.state, metrics.registry.collect),
        )
        await state.status.start()  # renders the first page before any request
        app[STATE] = state
        # Learn N before the first request (a new gateway would otherwise take the whole rate).
        with contextlib.suppress(Exception):
            await state.registry.beat(pool)
        today = lambda: datetime.now(UTC).date()  # noqa: E731
        state.tasks += [
            asyncio.create_task(state.keys.run()),
            asyncio.create_task(state.usage.run(pool, settings.usage_refresh_s, today)),
            asyncio.create_task(state.rollup.run(pool, SLO_FLUSH_S, metrics.slo_flush_failures.inc)),
            asyncio.create_task(state.registry.run(pool)),
            sla_start(app, pool),
            asyncio.create_task(state.status.run()),
        ]

    async def cleanup(app: web.Application) -> None:
        state = app[STATE]
        for task in state.tasks:
            task.cancel()
        for task in state.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if state.kafka is not None:
            state.kafka.stop()  # the loop stops polling; close() flushes in a thread
            await asyncio.to_thread(state.kafka.close)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(state.rollup.flush(state.pool), 3.0)
        await sla_stop(app, state.pool)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(state.registry.leave(state.pool), 3.0)
        await state.status.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(state.pool.close(), 3.0)

    app.on_startup.append(startup)
    app.on_cleanup.append(cleanup)
    dispatch_ingest_first(app, ingest)
    return app
