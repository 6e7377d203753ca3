"""Event lookup: where one event is, and a site's recent dead letters (docs/events-api.md).

    GET /api/v1/events/{event_id}[?source=S]   ledgered | outbox | dead_lettered | archived (200),
                                               unknown (404)
    GET /api/v1/events?status=dead_lettered[&limit=N]

Site-scoped: a site key reads its own site only; an operator token (gateway/operator_auth.py) names
the site with `site_id`. With `source`, the path's id is a CloudEvent's `id` and the event is the
one POST /api/v1/events stored for (source, id) (gateway/cloudevents.ledger_event_id). The state's
places are read by one statement (events_lookup.sql `locate`), so in one snapshot: an event moving
from the outbox to the ledger during a lookup is seen in one place, never in neither.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

import asyncpg
from aiohttp import web

from opsmantik.db.queries import package_queries
from opsmantik.events import CLOUDEVENT_ID, EVENT_ID
from opsmantik.gateway.auth import SiteAuth
from opsmantik.gateway.cloudevents import MAX_ID_CHARS, MAX_SOURCE_CHARS, NO_SPACE, ledger_event_id
from opsmantik.gateway.operator_auth import Operator, resolve
from opsmantik.gateway.state import (
    DB_ERRORS,
    STATE,
    error,
    invalid_query,
    json_response,
    limit_param,
    unavailable,
)

Q = package_queries("opsmantik.gateway", "events_lookup.sql")
PATH = "/api/v1/events"  # GET: the list (POST, the CloudEvents ingest, is routes_cloudevents.py)
ITEM = "/api/v1/events/{event_id}"
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000  # dead letters per answer; more is 400 naming `limit`
DB_TIMEOUT_S = 5.0


def _month(m: date) -> str:
    return f"{m:%Y-%m}"


def _time(t: datetime | None) -> str | None:
    return None if t is None else t.isoformat()


def site_scope(request: web.Request, caller: SiteAuth | Operator) -> uuid.UUID | web.Response:
    """The site whose events the caller reads: a site key's own; an operator's `site_id`."""
    raw = request.query.get("site_id")
    if raw is None:
        if isinstance(caller, Operator):
            return invalid_query("site_id", "required with an operator token: the site to read")
        return caller.site_id
    try:
        site_id = uuid.UUID(raw)
    except ValueError:
        return invalid_query("site_id", "must be a site id (a UUID)")
    if isinstance(caller, SiteAuth) and site_id != caller.site_id:
        return error(403, "forbidden", "a site key reads its own site only (site_id is for operator tokens)")
    return site_id


def ledger_id(request: web.Request) -> tuple[str, dict[str, str]] | web.Response:
    """The ledger event_id the request names, and the CloudEvent's (source, id) to echo if any."""
    event_id = request.match_info["event_id"]
    source = request.query.get("source")
    if source is None:
        if EVENT_ID.fullmatch(event_id) or CLOUDEVENT_ID.fullmatch(event_id):
            return event_id, {}
        return invalid_query(
            "event_id",
            "must be an /api/sync event_id (1-128 characters of [A-Za-z0-9._:-]) or a ledger id ce~<64 hex>; "
            "a CloudEvent's id goes with ?source=",
        )
    if not (1 <= len(source) <= MAX_SOURCE_CHARS and NO_SPACE.fullmatch(source)):
        return invalid_query(
            "source", f"must be a CloudEvent source: 1-{MAX_SOURCE_CHARS} characters, no spaces"
        )
    if not (1 <= len(event_id) <= MAX_ID_CHARS and "\x00" not in event_id):
        return invalid_query("event_id", f"a CloudEvent id is 1-{MAX_ID_CHARS} characters without NUL")
    return ledger_event_id(source, event_id), {"source": source, "id": event_id}


async def locate(conn: asyncpg.Connection, site_id: uuid.UUID, event_id: str) -> dict[str, Any]:
    """Where the event is, first match in this order: the ledger, the outbox, the dead letters, an
    archived month of the site (the event may be there: archived rows are in Parquet, not read
    per lookup), else unknown. One statement (events_lookup.sql `locate`), then the meters of a
    ledgered event's type."""
    row = await conn.fetchrow(Q["locate"], site_id, event_id, timeout=DB_TIMEOUT_S)
    assert row is not None  # one row always: the places are left-joined to it
    if row["event_type"] is not None:
        body: dict[str, Any] = {
            "status": "ledgered",
            "type": row["event_type"],
            "quantity": row["quantity"],
            "subject": row["subject"],
            "occurred_at": _time(row["occurred_at"]),
            "received_at": _time(row["received_at"]),
            "ledgered_at": _time(row["ledgered_at"]),
            "usage_month": _month(row["usage_month"]),
            "billing_month": _month(row["billing_month"]),
            "billing_class": row["billing_class"],
            "path": row["path"],
            "voided": row["voided_at"] is not None,
            "voided_at": _time(row["voided_at"]),
            "void_booked_month": None
            if row["void_booked_month"] is None
            else _month(row["void_booked_month"]),
        }
        if await _has_meters(conn):
            slugs = await conn.fetch(Q["meters_of_type"], row["event_type"], timeout=DB_TIMEOUT_S)
            body["meters"] = [r["slug"] for r in slugs]
        return body
    if row["outbox_id"] is not None:
        return {
            "status": "outbox",
            "outbox_id": row["outbox_id"],
            "received_at": _time(row["outbox_received_at"]),
            "queued_at": _time(row["queued_at"]),
            "attempts": row["attempts"],
            "parked": row["parked_at"] is not None,
        }
    if row["reason"] is not None:
        return {"status": "dead_lettered", **_dead_letter(row)}
    if row["archived_months"]:
        return {
            "status": "archived",
            "archived_months": [_month(m) for m in row["archived_months"]],
            "message": "not in Postgres; the site has rows in these archived months, which may hold it "
            "(their rows are in Parquet: the dispute export of a billing month reads them)",
        }
    return {
        "status": "unknown",
        "message": "no such event for this site: not ledgered, queued or dead-lettered",
    }


_meters_seen = False  # the meters table, once seen, stays (migrations only add)


async def _has_meters(conn: asyncpg.Connection) -> bool:
    global _meters_seen
    if not _meters_seen:
        _meters_seen = bool(await conn.fetchval(Q["has_meters"], timeout=DB_TIMEOUT_S))
    return _meters_seen


def _dead_letter(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "reason": row["reason"],
        "dead_lettered_at": _time(row["dead_lettered_at"]),
        "partition": row["kafka_partition"],
        "offset": row["kafka_offset"],
    }


async def lookup(request: web.Request) -> web.Response:
    caller = await resolve(request)
    if isinstance(caller, web.Response):
        return caller
    # The request's own errors (400 naming the parameter) before the scope's 403: a request
    # wrong in both is told what to fix first.
    named = ledger_id(request)
    if isinstance(named, web.Response):
        return named
    site_id = site_scope(request, caller)
    if isinstance(site_id, web.Response):
        return site_id
    event_id, cloudevent = named
    pool = request.app[STATE].pool
    try:
        async with pool.acquire(timeout=2.0) as conn:
            found = await locate(conn, site_id, event_id)
    except DB_ERRORS:
        return unavailable("look up the event")
    body = {"event_id": event_id, **cloudevent, **found}
    return json_response(404 if found["status"] == "unknown" else 200, body)


async def list_events(request: web.Request) -> web.Response:
    caller = await resolve(request)
    if isinstance(caller, web.Response):
        return caller
    if request.query.get("status") != "dead_lettered":
        return invalid_query(
            "status", 'must be "dead_lettered" (the one list served: the site\'s recent dead letters)'
        )
    limit = limit_param(request, DEFAULT_LIMIT, MAX_LIMIT)
    if isinstance(limit, web.Response):
        return limit
    site_id = site_scope(request, caller)  # after the 400s, as in lookup
    if isinstance(site_id, web.Response):
        return site_id
    try:
        async with request.app[STATE].pool.acquire(timeout=2.0) as conn:
            rows = await conn.fetch(Q["recent_dead_letters"], site_id, limit, timeout=DB_TIMEOUT_S)
    except DB_ERRORS:
        return unavailable("read the dead letters")
    events = [{"event_id": r["event_id"], **_dead_letter(r)} for r in rows]
    return json_response(200, {"status": "dead_lettered", "limit": limit, "events": events})


def setup(app: web.Application) -> None:
    app.router.add_get(PATH, list_events)
    app.router.add_get(ITEM, lookup)
