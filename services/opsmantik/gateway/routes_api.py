"""Tenant routes: POST /api/sync, GET /api/usage, GET /api/billing/dispute-export.

The site always comes from the key, never from the body (an unknown field is a 400), so one
site's key cannot write into or read another site's ledger.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime
from decimal import Decimal

import orjson
from aiohttp import web

from opsmantik.events import Event, parse_request
from opsmantik.gateway.auth import AuthUnavailable, LookupBudgetExhausted, SiteAuth, bearer_key
from opsmantik.gateway.publisher import Unavailable
from opsmantik.gateway.sla_rollup import LIMIT, SITE
from opsmantik.gateway.sql import Q
from opsmantik.gateway.state import OUTCOMES, STATE, State, error, invalid_query, json_response
from opsmantik.months import MonthError, parse_month


async def authenticate(request: web.Request, state: State) -> SiteAuth | web.Response:
    site = await _authenticate(request, state)
    if isinstance(site, web.Response) and site.status in (401, 429):
        await state.keys.pacer.pause()  # a flood of refusals is answered slowly (gateway/auth.py)
    return site


async def _authenticate(request: web.Request, state: State) -> SiteAuth | web.Response:
    key = bearer_key(request.headers.get("Authorization"))
    if key is None:
        state.metrics.auth_refused("malformed")
        return error(
            401,
            "unauthorized",
            "missing or malformed `Authorization: Bearer <key>`",
            {"WWW-Authenticate": "Bearer"},
        )
    try:
        site = await state.keys.lookup(key)
    except AuthUnavailable:
        return error(
            503, "unavailable", "cannot verify a new key right now; retrying is safe", {"Retry-After": "1"}
        )
    except LookupBudgetExhausted:
        return error(
            429,
            "key_lookups_exhausted",
            "too many unknown keys tried on this gateway; a key issued before tagged keys can wait "
            "for the retry, or be reissued (`opsmantik keys create`)",
            {"Retry-After": "1"},
        )
    if site is None:
        return error(401, "unauthorized", "unknown or revoked key", {"WWW-Authenticate": "Bearer"})
    return site


def _seconds_to_next_month(now: datetime) -> int:
    first = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    nxt = (
        first.replace(year=first.year + 1, month=1)
        if first.month == 12
        else first.replace(month=first.month + 1)
    )
    return max(1, int((nxt - now).total_seconds()))


async def sync(request: web.Request) -> web.Response:
    state = request.app[STATE]
    site = await authenticate(request, state)
    if isinstance(site, web.Response):
        return site
    request[SITE] = site.site_id  # the per-site SLA rollup counts this request's answer
    limit = state.limiter.take(site.site_id, *state.registry.share(site.rate_per_s, site.burst))
    if not limit.allowed:
        request[LIMIT] = "rate_limited"
        return error(
            429,
            "rate_limited",
            f"more than {site.rate_per_s:g} requests/s (burst {site.burst}) for this site",
            limit.headers(),
        )
    headers = limit.headers()
    if request.content_type != "application/json":
        return error(415, "unsupported_media_type", "Content-Type must be application/json", headers)
    max_bytes = state.settings.max_body_bytes
    if request.content_length is not None and request.content_length > max_bytes:
        return error(413, "payload_too_large", f"body larger than {max_bytes} bytes", headers)
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return error(413, "payload_too_large", f"body larger than {max_bytes} bytes", headers)
    now = datetime.now(UTC)
    parsed = parse_request(body, now, state.limits)
    if parsed.too_many:
        return error(413, "payload_too_large", parsed.errors[0].message, headers)
    if parsed.errors:
        return json_response(
            400, {"error": "invalid_request", "details": [e.as_dict() for e in parsed.errors[:100]]}, headers
        )
    # The same event_id twice in one batch: both reported, produced once (the first one).
    unique: dict[str, int] = {}
    events: list[Event] = []
    for e in parsed.events:
        if e.event_id not in unique:
            unique[e.event_id] = len(events)
            events.append(e)
    check = state.usage.check(site, events)
    if check.exceeded_month is not None:
        request[LIMIT] = "quota_exceeded"
        headers["Retry-After"] = str(_seconds_to_next_month(now))
        return error(
            429,
            "quota_exceeded",
            f"the site reached its hard cap of {site.hard_cap} events for {check.exceeded_month:%Y-%m}",
            headers,
        )
    try:
        stored = await state.publisher.publish(site.site_id, events, check.statuses, now)
    except Unavailable:
        return error(
            503,
            "unavailable",
            "neither the broker nor the outbox could take the events; nothing was stored, retrying is safe",
            {"Retry-After": "1"},
        )
    results = []
    for e in parsed.events:
        s = stored[unique[e.event_id]]
        results.append({"event_id": e.event_id, "status": s.status, "receipt": s.receipt})
    outcomes = Counter(s.status for s in stored)
    request[OUTCOMES] = outcomes
    for outcome, n in outcomes.items():
        state.metrics.events_done(outcome, n)
    return json_response(200, {"results": results}, headers)


def query_month(request: web.Request) -> date | web.Response:
    """?month=YYYY-MM (services/opsmantik/months.py), or the 400 to answer."""
    try:
        return parse_month(request.query.get("month"))
    except MonthError as exc:
        return invalid_query("month", str(exc))


def json_int(value: int | Decimal) -> int | orjson.Fragment:
    """An invoice sum as an exact JSON integer: numeric in Postgres, and may pass 2**63, which
    orjson's int cannot encode; a JSON number has no such limit."""
    value = int(value)
    return value if -(2**63) <= value < 2**63 else orjson.Fragment(str(value))


async def usage(request: web.Request) -> web.Response:
    state = request.app[STATE]
    site = await authenticate(request, state)
    if isinstance(site, web.Response):
        return site
    month = query_month(request)
    if isinstance(month, web.Response):
        return month
    async with state.pool.acquire(timeout=2.0) as conn:
        row = await conn.fetchrow(Q["usage_row"], site.site_id, month, timeout=5.0)
    body = {
        "site_id": str(site.site_id),
        "month": f"{month:%Y-%m}",
        "events": 0,
        "quantity": 0,
        "overlimit_events": 0,
        "overlimit_quantity": 0,
        "updated_at": None,
    }
    if row is not None:
        body.update(
            {k: json_int(row[k]) for k in ("events", "quantity", "overlimit_events", "overlimit_quantity")}
        )
        body["updated_at"] = row["updated_at"].isoformat()
    return json_response(200, body)


def setup(app: web.Application) -> None:
    app.router.add_post("/api/sync", sync)
    app.router.add_get("/api/usage", usage)
