"""Tenant routes: POST /api/sync, GET /api/usage, GET /api/billing/dispute-export.

The site always comes from the key, never from the body (an unknown field is a 400), so one
site's key cannot write into or read another site's ledger.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import NamedTuple

import orjson
from aiohttp import hdrs, web

from opsmantik.events import Event, Limits, Parsed, parse_request
from opsmantik.gateway.auth import AuthUnavailable, LookupBudgetExhausted, SiteAuth, bearer_key
from opsmantik.gateway.publisher import Stored, Unavailable
from opsmantik.gateway.sla_rollup import LIMIT, SITE
from opsmantik.gateway.sql import Q
from opsmantik.gateway.state import OUTCOMES, STATE, State, error, invalid_query, json_answer, json_response
from opsmantik.months import MonthError, parse_month
from opsmantik.tokens import TOKEN_PREFIX

Handler = Callable[[web.Request], Awaitable[web.Response]]


async def authenticate(request: web.Request, state: State) -> SiteAuth | web.Response:
    cached = state.keys.cached(request.headers.get("Authorization"))  # a header seen with a known key
    if cached is not None:
        return cached
    site = await _authenticate(request, state)
    if isinstance(site, web.Response) and site.status in (401, 429):
        await state.keys.pacer.pause()  # a flood of refusals is answered slowly (gateway/auth.py)
    return site


async def _authenticate(request: web.Request, state: State) -> SiteAuth | web.Response:
    header = request.headers.get("Authorization")
    key = bearer_key(header)
    if key is None:
        state.metrics.auth_refused("malformed")
        message = "missing or malformed `Authorization: Bearer <key>`"
        if header and TOKEN_PREFIX in header:  # an operator token reads, it never is a site (tokens.py)
            message = "an operator token is not a site key: these routes take the site's key (omk_...)"
        return error(401, "unauthorized", message, {"WWW-Authenticate": "Bearer"})
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
    state.keys.remember(header or "", key)
    return site


def _seconds_to_next_month(now: datetime) -> int:
    first = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    nxt = (
        first.replace(year=first.year + 1, month=1)
        if first.month == 12
        else first.replace(month=first.month + 1)
    )
    return max(1, int((nxt - now).total_seconds()))


def stored_all(published: list[Stored | None]) -> list[Stored]:
    """The receipts, or Unavailable when an event was not stored (the handler's publisher falls
    back until every event is stored or raises; a bare backend may answer None)."""
    stored = [s for s in published if s is not None]
    if len(stored) != len(published):
        raise Unavailable(f"{len(published) - len(stored)} of {len(published)} events not stored")
    return stored


class Ingested(NamedTuple):
    """A stored request: every event of it in request order, each with its Stored (an event_id
    given twice in one batch is stored once; both entries share the first one's Stored)."""

    events: list[Event]
    stored: list[Stored]
    headers: dict[str, str]  # the rate-limit headers every authenticated answer carries


# body, media type (no parameters), the received time, the gateway's limits → the validated batch
Parse = Callable[[bytes, str, datetime, Limits], Parsed]
# the request and its Ingested → the route's answer (200/204)
Answer = Callable[[web.Request, Ingested], web.Response]


async def ingest(
    request: web.Request, media_types: Sequence[str], parse: Parse, answer: Answer
) -> web.Response:
    """The ingest path of POST /api/sync and POST /api/v1/events (routes_cloudevents.py): auth,
    rate limit, media type, body size, `parse`, hard cap, publish; `answer(request, Ingested)`
    when every event is stored, otherwise the 4xx/503. One coroutine for the whole request
    (app.dispatch_ingest_first calls it directly, issue 28)."""
    state = request.app[STATE]
    site = state.keys.cached(request.headers.get("Authorization"))  # a header seen with a known key
    if site is None:
        found = await authenticate(request, state)
        if isinstance(found, web.Response):
            return found
        site = found
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
    # request.content_type parses the header (a cached parse, then a copy of its parameters): the
    # one raw value every client sends is taken as is (the parse gives the same media type)
    media_type = request.headers.get(hdrs.CONTENT_TYPE)
    if media_type != "application/json":
        media_type = request.content_type
    if media_type not in media_types:
        return error(
            415, "unsupported_media_type", f"Content-Type must be {' or '.join(media_types)}", headers
        )
    max_bytes = state.settings.max_body_bytes
    length = request.content_length
    if length is not None and length > max_bytes:
        return error(413, "payload_too_large", f"body larger than {max_bytes} bytes", headers)
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return error(413, "payload_too_large", f"body larger than {max_bytes} bytes", headers)
    now = datetime.now(UTC)
    parsed = parse(body, media_type, now, state.limits)
    if parsed.too_many:
        return error(413, "payload_too_large", parsed.errors[0].message, headers)
    if parsed.errors:
        return json_response(
            400, {"error": "invalid_request", "details": [e.as_dict() for e in parsed.errors[:100]]}, headers
        )
    events = parsed.distinct
    if state.usage.needs_load(site):  # the site's first request with a limit: read its usage
        await state.usage.load_site(state.pool, site.site_id, now.date())
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
        stored = stored_all(await state.publisher.publish(site.site_id, events, check.statuses, now))
    except Unavailable:
        return error(
            503,
            "unavailable",
            "neither the broker nor the outbox could take the events; nothing was stored, retrying is safe",
            {"Retry-After": "1"},
        )
    if len(stored) == 1:
        outcomes = {stored[0].status: 1}
    else:
        outcomes = {}
        for s in stored:
            outcomes[s.status] = outcomes.get(s.status, 0) + 1
    request[OUTCOMES] = outcomes
    for outcome, n in outcomes.items():
        state.metrics.events_done(outcome, n)
    if len(stored) != len(parsed.events):  # an event_id twice: each answered with the first's
        stored = [stored[slot] for slot in parsed.slots]
    return answer(request, Ingested(parsed.events, stored, headers))


def _parse_sync(body: bytes, media_type: str, now: datetime, limits: Limits) -> Parsed:
    return parse_request(body, now, limits)


def _sync_answer(request: web.Request, done: Ingested) -> web.Response:
    results = [
        {"event_id": e.event_id, "status": s.status, "receipt": s.receipt}
        for e, s in zip(done.events, done.stored, strict=True)
    ]
    return json_answer(200, {"results": results}, done.headers)


# POST /api/sync as one coroutine: what app.dispatch_ingest_first calls (no `sync` frame to
# suspend and resume on every request)
SYNC = functools.partial(ingest, media_types=("application/json",), parse=_parse_sync, answer=_sync_answer)


async def sync(request: web.Request) -> web.Response:
    """The router's handler (a request the dispatch leaves to the router: `Expect`, a query)."""
    return await SYNC(request)


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


def setup(app: web.Application) -> tuple[web.AbstractRoute, Handler]:
    """The routes; answers the ingest route and the coroutine function app.dispatch_ingest_first
    serves it with before the router (the route's handler, less one frame)."""
    route = app.router.add_post("/api/sync", sync)
    app.router.add_get("/api/usage", usage)
    return route, SYNC
