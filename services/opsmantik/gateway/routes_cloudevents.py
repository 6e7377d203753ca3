"""POST /api/v1/events: CloudEvents ingest, compatible with OpenMeter's API (docs/cloudevents.md).

The request goes down /api/sync's path (routes_api.ingest: same auth, rate limit, body limit,
hard cap, publisher, outbox), only the parser differs (gateway/cloudevents.py). The answer:

    204 No Content       every event stored (OpenMeter's answer; its generated Python SDK accepts
                         only 204), with `X-Event-Outcomes: accepted=2, fallback=1`
    200 {"results": …}   the same, when the request says `Prefer: return=representation`
                         (RFC 7240): one result per event, in request order, as /api/sync's plus
                         the CloudEvent's `source` and `id`
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from functools import lru_cache

from aiohttp import web

from opsmantik.config import parse_quantity_pointers
from opsmantik.events import Limits, Parsed
from opsmantik.gateway.cloudevents import MEDIA_TYPES, Pointers, parse_cloudevents
from opsmantik.gateway.routes_api import Handler, Ingested, ingest
from opsmantik.gateway.state import STATE, json_response

PATH = "/api/v1/events"


@lru_cache(maxsize=4)
def _pointers(raw: str) -> Pointers:
    return parse_quantity_pointers(raw)[0]  # Settings.validate refused a bad one at start


def wants_representation(prefer: str | None) -> bool:
    if not prefer:
        return False
    for preference in prefer.split(","):
        name, _, value = preference.split(";", 1)[0].partition("=")
        if name.strip().lower() == "return" and value.strip().strip('"').lower() == "representation":
            return True
    return False


async def events(request: web.Request) -> web.Response:
    pointers = _pointers(request.app[STATE].settings.cloudevents_quantity)

    def parse(body: bytes, media_type: str, now: datetime, limits: Limits) -> Parsed:
        return parse_cloudevents(body, media_type, now, pointers, limits)

    return await ingest(request, MEDIA_TYPES, parse, _answer)


def _answer(request: web.Request, done: Ingested) -> web.Response:
    headers = done.headers
    outcomes = Counter(s.status for s in done.stored)
    headers["X-Event-Outcomes"] = ", ".join(f"{k}={n}" for k, n in sorted(outcomes.items()))
    if not wants_representation(request.headers.get("Prefer")):
        return web.Response(status=204, headers=headers)
    headers["Preference-Applied"] = "return=representation"
    results = []
    for e, s in zip(done.events, done.stored, strict=True):
        ce = e.properties["ce"] if e.properties is not None else {}
        results.append(
            {
                "source": ce.get("source"),
                "id": ce.get("id"),
                "event_id": e.event_id,
                "status": s.status,
                "receipt": s.receipt,
            }
        )
    return json_response(200, {"results": results}, headers)


def setup(app: web.Application) -> tuple[web.AbstractRoute, Handler]:
    """The route, and its handler (app.dispatch_ingest_first serves it before the router)."""
    return app.router.add_post(PATH, events), events
