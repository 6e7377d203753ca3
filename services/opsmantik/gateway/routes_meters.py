"""The meters' query API, OpenMeter-compatible (docs/meters.md):

    GET /api/v1/meters                     the meters
    GET /api/v1/meters/{meterIdOrSlug}     one meter
    GET|POST /api/v1/meters/{slug}/query   its aggregates (JSON, or text/csv by Accept)

A site key reads its own site only: the site comes from the key, never from a parameter. Bad
input is a 400 naming the parameter, an unknown meter 404, a failure reading Postgres 503.
"""

from __future__ import annotations

import csv
import io
import uuid

import asyncpg
import orjson
from aiohttp import web

from opsmantik.errors import NotFound
from opsmantik.gateway.auth import SiteAuth
from opsmantik.gateway.operator_auth import resolve
from opsmantik.gateway.state import STATE, error, json_response
from opsmantik.meters import definitions, query

MAX_POST_BYTES = 64 * 1024
DB_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)


async def _caller(request: web.Request) -> list[uuid.UUID] | None | web.Response:
    """The sites the caller may read (None: every site, the operator), or the refusal."""
    caller = await resolve(request)  # a site key or an operator token (gateway/operator_auth.py)
    if isinstance(caller, web.Response):
        return caller
    if isinstance(caller, SiteAuth):
        return [caller.site_id]
    return None  # the operator: every site; filterCustomerId is a site id, groupBy=customer_id


def bad(parameter: str, message: str) -> web.Response:
    """400 naming the parameter (the shape of every 400: docs/design.md)."""
    detail = {"index": None, "field": parameter, "message": message}
    return json_response(400, {"error": "invalid_request", "message": message, "details": [detail]})


def _unavailable() -> web.Response:
    return error(
        503, "unavailable", "cannot read the meters right now; retrying is safe", {"Retry-After": "1"}
    )


async def list_meters(request: web.Request) -> web.Response:
    caller = await _caller(request)
    if isinstance(caller, web.Response):
        return caller
    try:
        async with request.app[STATE].pool.acquire(timeout=2.0) as conn:
            meters = await definitions.load(conn)
    except DB_ERRORS:
        return _unavailable()
    return json_response(200, [m.as_dict() for m in meters])


async def get_meter(request: web.Request) -> web.Response:
    caller = await _caller(request)
    if isinstance(caller, web.Response):
        return caller
    try:
        async with request.app[STATE].pool.acquire(timeout=2.0) as conn:
            meter = await definitions.get(conn, request.match_info["meter"])
    except NotFound as exc:
        return error(404, "not_found", str(exc))
    except DB_ERRORS:
        return _unavailable()
    return json_response(200, meter.as_dict())


async def _params(request: web.Request) -> list[tuple[str, str]] | web.Response:
    """GET: the query string. POST: a JSON object of the same names (lists for the repeatable
    ones, an object for filterGroupBy)."""
    params = list(request.query.items())
    if request.method != "POST":
        return params
    body = await request.content.read(MAX_POST_BYTES + 1)
    if len(body) > MAX_POST_BYTES:
        return error(413, "payload_too_large", f"a query body is at most {MAX_POST_BYTES} bytes")
    try:
        doc = orjson.loads(body or b"{}")
    except orjson.JSONDecodeError:
        return bad("body", "not JSON")
    if not isinstance(doc, dict):
        return bad("body", "a JSON object of query parameters")
    for k, v in doc.items():
        if k == "filterGroupBy" and isinstance(v, dict):
            params += [(f"filterGroupBy[{gk}]", str(gv)) for gk, gv in v.items()]
        elif isinstance(v, list):
            params += [(k, str(x)) for x in v]
        elif v is not None:
            params.append((k, str(v)))
    return params


def _csv(answer: query.Answer, meter: definitions.Meter) -> web.Response:
    out = io.StringIO()
    groups = sorted({k for r in answer.rows for k in r.group_by})
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["window_start", "window_end", "subject", "customer_id", *groups, "value"])
    for r in answer.rows:
        d = r.as_dict()
        w.writerow(
            [
                d["windowStart"],
                d["windowEnd"],
                r.subject or "",
                d["customerId"] or "",
                *(r.group_by.get(g) or "" for g in groups),
                "" if r.value is None else r.value,
            ]
        )
    return web.Response(
        status=200,
        text=out.getvalue(),
        content_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{meter.slug}.csv"'},
    )


async def query_meter(request: web.Request) -> web.Response:
    caller = await _caller(request)
    if isinstance(caller, web.Response):
        return caller
    params = await _params(request)
    if isinstance(params, web.Response):
        return params
    try:
        async with request.app[STATE].pool.acquire(timeout=2.0) as conn:
            meter = await definitions.get(conn, request.match_info["meter"])
            q = query.parse_params(params, meter, operator=caller is None)
            answer = await query.run(conn, meter, q, caller)
    except NotFound as exc:
        return error(404, "not_found", str(exc))
    except query.BadQuery as exc:
        return bad(exc.parameter, str(exc))
    except DB_ERRORS:
        return _unavailable()
    if "text/csv" in request.headers.get("Accept", ""):
        return _csv(answer, meter)
    return json_response(200, answer.as_dict())


def setup(app: web.Application) -> None:
    app.router.add_get("/api/v1/meters", list_meters)
    app.router.add_get("/api/v1/meters/{meter}", get_meter)
    app.router.add_get("/api/v1/meters/{meter}/query", query_meter)
    app.router.add_post("/api/v1/meters/{meter}/query", query_meter)
