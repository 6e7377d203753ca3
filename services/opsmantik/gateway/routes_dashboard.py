"""The customer's live usage dashboard and the portal tokens that open it (docs/dashboard.md).

    GET  /dashboard?token=TOKEN             the page (static HTML; its script reads the data below)
    GET  /dashboard/assets/{name}           its CSS and JS, shipped in the package (no token)
    GET  /dashboard/api/summary             this month's usage, quota, hard cap, freshness
    GET  /dashboard/api/meters              the meters
    GET  /dashboard/api/series?meter=&tz=   a meter per day of this month and per hour of today
    GET  /dashboard/api/top?meter=&group=&tz=&limit=   a meter's top groups this month
    GET  /dashboard/api/dead-letters?limit= the site's recent dead letters
    POST   /api/v1/portal/tokens            an operator token mints one: {"site_id", "ttl"}
    DELETE /api/v1/portal/tokens/{token_id} an operator token revokes one

The data routes take the portal token as `Authorization: Bearer TOKEN` (the page's script sends
it so), the page as `?token=`; the gateway logs no request line (no access log), so the token in
the page's URL is never written anywhere. A missing, forged, expired or revoked token is 401;
the site is the token's, never a parameter. Meter figures come from meters/query.py: the same
answers as GET /api/v1/meters/{slug}/query for the site's key.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import asyncpg
from aiohttp import web

from opsmantik import portal
from opsmantik.db.queries import package_queries
from opsmantik.errors import NotFound
from opsmantik.gateway.auth import bearer
from opsmantik.gateway.operator_auth import require_operator
from opsmantik.gateway.state import (
    DB_ERRORS,
    STATE,
    error,
    invalid_query,
    json_object,
    json_response,
    limit_param,
    unavailable,
)
from opsmantik.meters import definitions, query, windows
from opsmantik.sites import UnknownSite

Q = package_queries("opsmantik.gateway", "dashboard.sql")
PAGE = "/dashboard"
API = "/dashboard/api"
ROUTES = (
    PAGE,
    f"{API}/summary",
    f"{API}/meters",
    f"{API}/series",
    f"{API}/top",
    f"{API}/dead-letters",
    "/api/v1/portal/tokens",
)
ASSET_TYPES = {".css": "text/css", ".js": "text/javascript", ".html": "text/html"}
DB_TIMEOUT_S = 5.0
LAG_WINDOW = timedelta(minutes=5)
DEFAULT_TOP, MAX_TOP = 10, 100
DEFAULT_DEAD_LETTERS, MAX_DEAD_LETTERS = 20, 100
MAX_BODY = 4096
# No caching (the figures move; the page must not outlive its token in a cache), no referrer
# (the page's URL holds the token), no framing.
PRIVATE = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
}
CSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:"


@dataclass(frozen=True)
class Assets:
    files: dict[str, bytes]


ASSETS: web.AppKey[Assets] = web.AppKey("dashboard_assets", Assets)


def _load_assets() -> Assets:
    root = resources.files("opsmantik.dashboard")
    return Assets(
        {
            p.name: p.read_bytes()
            for p in root.iterdir()
            if any(p.name.endswith(ext) for ext in ASSET_TYPES) and p.is_file()
        }
    )


# ---------------------------------------------------------------- the token


def _unauthorized(message: str, page: bool) -> web.Response:
    headers = {**PRIVATE, "WWW-Authenticate": "Bearer"}
    if not page:
        return error(401, "unauthorized", message, headers)
    html = (
        "<!doctype html><meta charset=utf-8><meta name=viewport content='width=device-width'>"
        f"<title>Dashboard link not valid</title><p>{message}. Ask for a new dashboard link.</p>"
    )
    return web.Response(status=401, text=html, content_type="text/html", headers=headers)


async def authorize(request: web.Request, page: bool = False) -> portal.Claims | web.Response:
    """The token's claims, or the refusal: 401 missing/forged/expired/revoked, 503 Postgres down."""
    token = request.query.get("token") if page else bearer(request.headers.get("Authorization"))
    if not token:
        return _unauthorized("a portal token is required", page)
    state = request.app[STATE]
    claims = portal.verify(token, state.keys.secrets)
    if claims is None:
        state.metrics.auth_refused("bad_portal_token")
        await state.keys.pacer.pause()
        return _unauthorized("this portal token is not valid", page)
    if claims.expires_at <= datetime.now(UTC):
        return _unauthorized("this portal token has expired", page)
    try:
        async with state.pool.acquire(timeout=2.0) as conn:
            live = await portal.active(conn, claims)
    except DB_ERRORS:
        return unavailable("check the token")
    if not live:
        return _unauthorized("this portal token was revoked", page)
    return claims


def _answer(body: object) -> web.Response:
    return json_response(200, body, PRIVATE)


def _iso(t: datetime | None) -> str | None:
    return None if t is None else query.iso(t)


# ---------------------------------------------------------------- the page


async def page(request: web.Request) -> web.Response:
    claims = await authorize(request, page=True)
    if isinstance(claims, web.Response):
        return claims
    body = request.app[ASSETS].files["index.html"]
    headers = {**PRIVATE, "Content-Security-Policy": CSP}
    return web.Response(body=body, content_type="text/html", charset="utf-8", headers=headers)


async def asset(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    body = request.app[ASSETS].files.get(name)
    if body is None or name == "index.html":
        return error(404, "not_found", "no such asset")
    ext = name[name.rfind(".") :]
    return web.Response(
        body=body,
        content_type=ASSET_TYPES[ext],
        charset="utf-8",
        headers={"Cache-Control": "public, max-age=300", "X-Content-Type-Options": "nosniff"},
    )


# ---------------------------------------------------------------- the data


async def summary(request: web.Request) -> web.Response:
    """This billing month's (UTC) invoice row against the site's quota and hard cap, and how fresh
    it is: when the worker last changed it, the ledger's worst lag over the last 5 minutes (the
    freshness rollup /status reads) and the site's events waiting in the outbox."""
    claims = await authorize(request)
    if isinstance(claims, web.Response):
        return claims
    now = datetime.now(UTC)
    month = now.date().replace(day=1)
    try:
        async with request.app[STATE].pool.acquire(timeout=2.0) as conn:
            row = await conn.fetchrow(Q["site_usage"], claims.site_id, month, timeout=DB_TIMEOUT_S)
            lag = await conn.fetchrow(Q["ledger_lag"], now - LAG_WINDOW, timeout=DB_TIMEOUT_S)
            pending = await conn.fetchval(Q["outbox_pending"], claims.site_id, timeout=DB_TIMEOUT_S)
    except DB_ERRORS:
        return unavailable("read the figures")
    if row is None:  # the site was deleted under a live token
        return _unauthorized("this portal token's site no longer exists", False)
    return _answer(
        {
            "site_id": str(claims.site_id),
            "site_name": row["name"],
            "month": f"{month:%Y-%m}",
            "usage": {
                "events": int(row["events"]),
                "quantity": int(row["quantity"]),
                "overlimit_events": int(row["overlimit_events"]),
                "overlimit_quantity": int(row["overlimit_quantity"]),
            },
            "monthly_quota": row["monthly_quota"],
            "hard_cap": row["hard_cap"],
            "freshness": {
                "usage_updated_at": _iso(row["updated_at"]),
                "ledger_lag_max_ms": lag["lag_max_ms"],
                "ledger_events_5m": lag["events"],
                "outbox_pending": pending,
            },
            "token_expires_at": _iso(claims.expires_at),
            "as_of": _iso(now),
        }
    )


async def meters(request: web.Request) -> web.Response:
    claims = await authorize(request)
    if isinstance(claims, web.Response):
        return claims
    try:
        async with request.app[STATE].pool.acquire(timeout=2.0) as conn:
            found = await definitions.load(conn)
    except DB_ERRORS:
        return unavailable("read the figures")
    return _answer(
        [{"slug": m.slug, "aggregation": m.aggregation, "groups": ["subject", *m.group_by]} for m in found]
    )


@dataclass(frozen=True)
class Period:
    zone_name: str
    zone: ZoneInfo
    month: tuple[datetime, datetime]
    today: tuple[datetime, datetime]


def _period(zone_name: str, now: datetime) -> Period:
    """This month and today in the zone (ValueError: not an IANA zone)."""
    try:
        zone = ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(zone_name) from None
    month = windows.floor(now, "MONTH", zone)
    day = windows.floor(now, "DAY", zone)
    return Period(
        zone_name,
        zone,
        (month, windows.next_boundary(month, "MONTH", zone)),
        (day, windows.next_boundary(day, "DAY", zone)),
    )


async def _run(
    conn: asyncpg.Connection,
    meter: definitions.Meter,
    site: uuid.UUID,
    span: tuple[datetime, datetime],
    zone_name: str,
    extra: list[tuple[str, str]],
) -> query.Answer:
    """meters/query.py with the same parameters a site key would send to /api/v1/meters/{slug}/query."""
    params = [("from", query.iso(span[0])), ("to", query.iso(span[1])), ("windowTimeZone", zone_name), *extra]
    return await query.run(conn, meter, query.parse_params(params, meter, operator=False), [site])


async def _meter_request(
    request: web.Request,
) -> tuple[portal.Claims, str, Period] | web.Response:
    claims = await authorize(request)
    if isinstance(claims, web.Response):
        return claims
    slug = request.query.get("meter", "events")
    try:
        period = _period(request.query.get("tz", "UTC"), datetime.now(UTC))
    except ValueError:
        return invalid_query("tz", "an IANA time zone, e.g. Europe/Paris")
    return claims, slug, period


async def series(request: web.Request) -> web.Response:
    got = await _meter_request(request)
    if isinstance(got, web.Response):
        return got
    claims, slug, period = got
    try:
        async with request.app[STATE].pool.acquire(timeout=2.0) as conn:
            meter = await definitions.get(conn, slug)
            days = await _run(
                conn, meter, claims.site_id, period.month, period.zone_name, [("windowSize", "DAY")]
            )
            hours = await _run(
                conn, meter, claims.site_id, period.today, period.zone_name, [("windowSize", "HOUR")]
            )
    except NotFound as exc:
        return error(404, "not_found", str(exc))
    except DB_ERRORS:
        return unavailable("read the figures")
    return _answer(
        {
            "meter": meter.slug,
            "aggregation": meter.aggregation,
            "tz": period.zone_name,
            "month": filled(days, "DAY", period.zone, "%d"),
            "today": filled(hours, "HOUR", period.zone, "%H"),
        }
    )


def filled(answer: query.Answer, size: str, zone: ZoneInfo, label: str) -> dict[str, Any]:
    """Every window of the answer's span, with its value (0 where the meter has no data) and a
    local label (`label`: a strftime format in the zone), so the page draws a bar per window."""
    assert answer.start is not None and answer.end is not None  # _run gives both
    values = {r.window_start: r.value for r in answer.rows}
    spans = windows.windows(answer.start, answer.end, size, zone, query.MAX_WINDOWS) or []
    return {
        "from": _iso(answer.start),
        "to": _iso(answer.end),
        "data": [
            {
                "windowStart": _iso(ws),
                "label": ws.astimezone(zone).strftime(label),
                "value": values.get(ws, 0),
            }
            for ws, _ in spans
        ],
    }


async def top(request: web.Request) -> web.Response:
    got = await _meter_request(request)
    if isinstance(got, web.Response):
        return got
    claims, slug, period = got
    group = request.query.get("group", "subject")
    limit = limit_param(request, DEFAULT_TOP, MAX_TOP)
    if isinstance(limit, web.Response):
        return limit
    try:
        async with request.app[STATE].pool.acquire(timeout=2.0) as conn:
            meter = await definitions.get(conn, slug)
            if group != "subject" and group not in meter.group_by:
                names = ", ".join(["subject", *meter.group_by])
                return invalid_query("group", f"a group of meter {meter.slug}: {names}")
            answer = await _run(
                conn, meter, claims.site_id, period.month, period.zone_name, [("groupBy", group)]
            )
    except NotFound as exc:
        return error(404, "not_found", str(exc))
    except DB_ERRORS:
        return unavailable("read the figures")
    rows = [
        {"group": r.subject if group == "subject" else r.group_by.get(group), "value": r.value}
        for r in answer.rows
    ]
    rows.sort(key=lambda r: (-(r["value"] or 0), str(r["group"])))  # type: ignore[operator]
    return _answer(
        {
            "meter": meter.slug,
            "group": group,
            "tz": period.zone_name,
            "from": _iso(answer.start),
            "to": _iso(answer.end),
            "groups": len(rows),
            "top": rows[:limit],
        }
    )


async def dead_letters(request: web.Request) -> web.Response:
    claims = await authorize(request)
    if isinstance(claims, web.Response):
        return claims
    limit = limit_param(request, DEFAULT_DEAD_LETTERS, MAX_DEAD_LETTERS)
    if isinstance(limit, web.Response):
        return limit
    try:
        async with request.app[STATE].pool.acquire(timeout=2.0) as conn:
            rows = await conn.fetch(Q["recent_dead_letters"], claims.site_id, limit, timeout=DB_TIMEOUT_S)
    except DB_ERRORS:
        return unavailable("read the figures")
    return _answer(
        {
            "events": [
                {"event_id": r["event_id"], "reason": r["reason"], "dead_lettered_at": _iso(r["created_at"])}
                for r in rows
            ]
        }
    )


# ---------------------------------------------------------------- minting (operator tokens)


async def mint_token(request: web.Request) -> web.Response:
    operator = await require_operator(request)
    if isinstance(operator, web.Response):
        return operator
    doc = await json_object(request, MAX_BODY, '{"site_id": "<uuid>", "ttl": "1h"}')
    if isinstance(doc, web.Response):
        return doc
    try:
        site_id = uuid.UUID(str(doc.get("site_id")))
    except ValueError:
        return invalid_query("site_id", "a site id (UUID)")
    ttl_raw = doc.get("ttl", int(portal.DEFAULT_TTL.total_seconds()))
    if isinstance(ttl_raw, float) and ttl_raw.is_integer():  # JSON's 3600.0 is the integer 3600
        ttl_raw = int(ttl_raw)
    if isinstance(ttl_raw, bool) or not isinstance(ttl_raw, int | str):
        return invalid_query("ttl", "seconds (an integer) or a duration like 15m, 1h, 7d")
    try:
        ttl = portal.parse_ttl(str(ttl_raw))
    except portal.BadTtl as exc:
        return invalid_query("ttl", str(exc))
    state = request.app[STATE]
    try:
        async with state.pool.acquire(timeout=2.0) as conn:
            new = await portal.mint(
                conn, site_id, ttl, f"operator:{operator.name}"[:200], secret=state.settings.key_secret
            )
    except UnknownSite as exc:
        return error(404, "not_found", str(exc))
    except DB_ERRORS:
        return unavailable("read the figures")
    return json_response(201, portal.mint_answer(new, state.settings.dashboard_base_url), PRIVATE)


async def revoke_token(request: web.Request) -> web.Response:
    operator = await require_operator(request)
    if isinstance(operator, web.Response):
        return operator
    try:
        token_id = uuid.UUID(request.match_info["token_id"])
    except ValueError:
        return invalid_query("token_id", "a portal token's id (UUID)")
    try:
        async with request.app[STATE].pool.acquire(timeout=2.0) as conn:
            revoked = await portal.revoke(conn, token_id)
    except DB_ERRORS:
        return unavailable("read the figures")
    if not revoked:
        return error(404, "not_found", f"no active portal token {token_id}")
    return web.Response(status=204)


def setup(app: web.Application) -> None:
    app[ASSETS] = _load_assets()
    app.router.add_get(PAGE, page)
    app.router.add_get(PAGE + "/assets/{name}", asset)
    app.router.add_get(f"{API}/summary", summary)
    app.router.add_get(f"{API}/meters", meters)
    app.router.add_get(f"{API}/series", series)
    app.router.add_get(f"{API}/top", top)
    app.router.add_get(f"{API}/dead-letters", dead_letters)
    app.router.add_post("/api/v1/portal/tokens", mint_token)
    app.router.add_delete("/api/v1/portal/tokens/{token_id}", revoke_token)
