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

from aiohttp import web

from opsmantik.errors import NotFound
from opsmantik.gateway.auth import SiteAuth
from opsmantik.gateway.operator_auth import resolve
from opsmantik.gateway.state import DB_ERRORS, STATE, error, json_object, json_response, unavailable
from opsmantik.meters import definitions, query

MAX_POST_BYTES = 64 * 1024
# A POST body's keys: the repeatable parameters are lists, the others strings (filterGroupBy an object).
LIST_PARAMS = frozenset({"subject", "groupBy", "filterCustomerId"})
SCALAR_PARAMS = frozenset({"from", "to", "windowSize", "windowTimeZone"})


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


async def list_meters(request: web.Request) -> web.Response:
    caller = await _caller(request)
    if isinstance(caller, web.Response):
        return caller
    try:
        async with request.app[STATE].pool.acquire(timeout=2.0) as conn:
            meters = await definitions.load(conn)
    except DB_ERRORS:
        return unavailable("read the meters")
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
        return unavailable("read the meters")
    return json_response(200, meter.as_dict())


async def _params(request: web.Request) -> list[tuple[str, str]] | web.Response:
    """GET: the query string. POST: a JSON object of the same names (lists for the repeatable
    ones, an object for filterGroupBy)."""
    params = list(request.query.items())
    if request.method != "POST":
        return params
    doc = await json_object(request, MAX_POST_BYTES, 'the query parameters, e.g. {"windowSize": "DAY"}', bad)
    if isinstance(doc, web.Response):
        return doc
    for k, v in doc.items():
        refused = _body_param(k, v, params)
        if refused is not None:
            return refused
    return params


def _body_param(k: str, v: object, params: list[tuple[str, str]]) -> web.Response | None:
    """One key of a POST body onto `params`, or the 400 naming it: each value has the type the
    schema gives it (never str() of another, which would query for "[1]" or "True"); null is
    absent; any other key is refused, as an unknown parameter is on GET."""
    if k not in LIST_PARAMS | SCALAR_PARAMS | {"filterGroupBy"}:
        return bad(k, "unknown parameter")
    if v is None:
        return None
    if k == "filterGroupBy":
        if not (isinstance(v, dict) and all(isinstance(x, str) for x in v.values())):
            return bad(k, "an object of group name to string value")
        params += [(f"filterGroupBy[{gk}]", gv) for gk, gv in v.items()]
    elif k in LIST_PARAMS:
        if not (isinstance(v, list) and all(isinstance(x, str) for x in v)):
            return bad(k, "a list of strings")
        params += [(k, x) for x in v]
    elif isinstance(v, str):
        params.append((k, v))
    else:
        return bad(k, "a string")
    return None


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
        return unavailable("read the meters")
    if "text/csv" in request.headers.get("Accept", ""):
        return _csv(answer, meter)
    return json_response(200, answer.as_dict())


def setup(app: web.Application) -> None:
    app.router.add_get("/api/v1/meters", list_meters)
    app.router.add_get("/api/v1/meters/{meter}", get_meter)
    app.router.add_get("/api/v1/meters/{meter}/query", query_meter)
    app.router.add_post("/api/v1/meters/{meter}/query", query_meter)
