"""Operator routes: /healthz (process alive), /readyz (can store events), /metrics, /status."""

from __future__ import annotations

import html
from datetime import UTC, datetime

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from services.gateway.breaker import CLOSED
from services.gateway.state import STATE, State, invalid_query, json_response


async def healthz(request: web.Request) -> web.Response:
    registry = request.app[STATE].registry
    return json_response(200, {"status": "ok", "instance": registry.instance_id,
                               "gateways_live": registry.live})


async def _db_ok(state: State) -> bool:
    try:
        async with state.pool.acquire(timeout=1.0) as conn:
            await conn.fetchval("SELECT 1", timeout=1.0)
        return True
    except Exception:  # noqa: BLE001 - any failure means "not reachable"
        return False


async def readyz(request: web.Request) -> web.Response:
    """Ready when events can be stored: the Kafka path is closed, or the outbox answers."""
    state = request.app[STATE]
    kafka = state.breaker.state == CLOSED
    db = await _db_ok(state)
    body = {"kafka": state.breaker.state, "postgres": "ok" if db else "unreachable",
            "usage_cache_age_s": state.usage.age_s()}
    return json_response(200 if kafka or db else 503, body)


async def metrics(request: web.Request) -> web.Response:
    state = request.app[STATE]
    m = state.metrics
    m.queue_depth.set(state.kafka.queue_depth() if state.kafka else 0)
    m.key_cache.set(len(state.keys.known))
    age = state.usage.age_s()
    m.usage_age.set(-1 if age is None else age)
    return web.Response(body=generate_latest(m.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def status(request: web.Request) -> web.Response:
    """The status page: HTML for people, JSON with `Accept: application/json` or ?format=json."""
    from services.slo import slo_snapshot

    fmt = request.query.get("format")
    if fmt not in (None, "json"):
        return invalid_query("format", "expected json (or no format: HTML)")
    state = request.app[STATE]
    month = datetime.now(UTC).strftime("%Y-%m")
    snap = await slo_snapshot(state.pool, month)
    snap["gateway"] = {"breaker": state.breaker.state, "usage_cache_age_s": state.usage.age_s()}
    wants_json = (fmt == "json"
                  or "application/json" in request.headers.get("Accept", ""))
    if wants_json:
        return json_response(200, snap)
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{html.escape(str(v.get('value')))}</td>"
        f"<td>{html.escape(str(v.get('target')))}</td><td>{'met' if v.get('met') else 'breached'}</td></tr>"
        for name, v in snap["objectives"].items()
    )
    page = (f"<!doctype html><html><head><meta charset=utf-8><title>OpsMantik status</title></head>"
            f"<body><h1>OpsMantik status — {html.escape(month)}</h1>"
            f"<p>Kafka path: {html.escape(state.breaker.state)}</p>"
            f"<table border=1><tr><th>objective</th><th>value</th><th>target</th><th></th></tr>"
            f"{rows}</table></body></html>")
    return web.Response(text=page, content_type="text/html")


def setup(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/status", status)
