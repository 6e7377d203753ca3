"""Operator routes: /healthz (process alive), /readyz (can store events), /metrics, /status."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from opsmantik.gateway.breaker import CLOSED
from opsmantik.gateway.state import STATE, State, invalid_query, json_response


async def healthz(request: web.Request) -> web.Response:
    registry = request.app[STATE].registry
    return json_response(
        200, {"status": "ok", "instance": registry.instance_id, "gateways_live": registry.live}
    )


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
    body = {
        "kafka": state.breaker.state,
        "postgres": "ok" if db else "unreachable",
        "usage_cache_age_s": state.usage.age_s(),
    }
    return json_response(200 if kafka or db else 503, body)


async def metrics(request: web.Request) -> web.Response:
    state = request.app[STATE]
    m = state.metrics
    m.queue_depth.set(state.kafka.queue_depth() if state.kafka else 0)
    m.key_cache.set(len(state.keys.known))
    age = state.usage.age_s()
    m.usage_age.set(-1 if age is None else age)
    return web.Response(body=generate_latest(m.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


STATUS_FORMATS = ("html", "json")


def _wants_json(request: web.Request) -> bool | None:
    """?format= decides; else an Accept that names JSON and not HTML. None: an unknown format."""
    fmt = request.query.get("format")
    if fmt is not None:
        return None if fmt not in STATUS_FORMATS else fmt == "json"
    accept = request.headers.get("Accept", "")
    return "application/json" in accept and "text/html" not in accept


async def status(request: web.Request) -> web.Response:
    """The public status page (services/opsmantik/status/): bytes rendered by the background refresher.
    No database, broker or ledger work happens here: the page is as cheap as a static file."""
    wants_json = _wants_json(request)
    if wants_json is None:
        return invalid_query("format", "expected html or json")
    return _status_bytes(request, wants_json, {"Vary": "Accept"})


async def status_json(request: web.Request) -> web.Response:
    return _status_bytes(request, True, {"Access-Control-Allow-Origin": "*"})


def _status_bytes(request: web.Request, as_json: bool, headers: dict[str, str]) -> web.Response:
    state = request.app[STATE]
    rendered = state.status.rendered
    assert rendered is not None  # rendered once in startup, before the first request
    body = rendered.json if as_json else rendered.html
    headers["Cache-Control"] = f"public, max-age={max(1, int(state.settings.status_refresh_s))}"
    headers["ETag"] = body.etag
    if "Vary" in headers:
        headers["Vary"] += ", Accept-Encoding"
    else:
        headers["Vary"] = "Accept-Encoding"
    ctype = "application/json" if as_json else "text/html"
    if body.etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    # Pre-compressed once per refresh; the handler only picks the bytes (aiohttp's own
    # compression would gzip the page again on every request).
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        headers["Content-Encoding"] = "gzip"
        return web.Response(body=body.gzip, content_type=ctype, charset="utf-8", headers=headers)
    return web.Response(body=body.raw, content_type=ctype, charset="utf-8", headers=headers)


def setup(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/status", status)
    app.router.add_get("/status.json", status_json)
