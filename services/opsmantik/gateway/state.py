"""What route handlers share: the gateway's `State` (reached as `request.app[STATE]`) and the JSON
answers. Routes import this module, app.py imports the routes: no import cycle."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson
from aiohttp import web

from opsmantik.config import Settings
from opsmantik.events import Limits
from opsmantik.gateway.auth import KeyCache
from opsmantik.gateway.breaker import Breaker
from opsmantik.gateway.metrics import GatewayMetrics
from opsmantik.gateway.publisher import KafkaPublisher, Publisher
from opsmantik.gateway.quota import UsageCache
from opsmantik.gateway.ratelimit import RateLimiter
from opsmantik.gateway.registry import GatewayRegistry
from opsmantik.gateway.rollup import SloRollup
from opsmantik.status.snapshot import StatusRefresher


@dataclass
class State:
    settings: Settings
    pool: asyncpg.Pool
    keys: KeyCache
    usage: UsageCache
    limiter: RateLimiter
    breaker: Breaker
    metrics: GatewayMetrics
    rollup: SloRollup
    publisher: Publisher
    kafka: KafkaPublisher | None
    limits: Limits
    registry: GatewayRegistry
    status: StatusRefresher  # the public status page's background snapshot (services/opsmantik/status/)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


STATE: web.AppKey[State] = web.AppKey("state", State)
# An ingest request's stored events by outcome (accepted, overlimit, degraded, fallback): n
OUTCOMES: web.RequestKey[dict[str, int]] = web.RequestKey("outcomes", dict)
# Postgres unreachable, failing or slow: a read route answers them with unavailable().
DB_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)


def json_response(status: int, body: object, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps(body), content_type="application/json", headers=headers
    )


def error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return json_response(status, {"error": code, "message": message}, headers)


def invalid_query(field: str, message: str) -> web.Response:
    """400 for a bad query parameter (schemas/openapi.yaml `Invalid`)."""
    return json_response(
        400, {"error": "invalid_request", "details": [{"index": None, "field": field, "message": message}]}
    )


def unavailable(what: str) -> web.Response:
    """503 when Postgres cannot serve the request now: "cannot {what} right now"."""
    return error(503, "unavailable", f"cannot {what} right now; retrying is safe", {"Retry-After": "1"})


def limit_param(request: web.Request, default: int, cap: int) -> int | web.Response:
    """`?limit=`: an integer from 1 to `cap` (absent: `default`), or the 400 naming it."""
    raw = request.query.get("limit")
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= cap):
        return invalid_query("limit", f"must be an integer from 1 to {cap}")
    return int(raw)


async def json_object(
    request: web.Request,
    max_bytes: int,
    expected: str,
    invalid: Callable[[str, str], web.Response] = invalid_query,
) -> dict[str, Any] | web.Response:
    """The body as a JSON object (an empty body is {}), or the refusal: 413 over `max_bytes`, else
    `invalid("body", ...)` telling the caller what to send (`expected`)."""
    raw = await request.content.read(max_bytes + 1)
    if len(raw) > max_bytes:
        return error(413, "payload_too_large", f"the body is at most {max_bytes} bytes")
    try:
        doc = orjson.loads(raw or b"{}")
    except orjson.JSONDecodeError:
        return invalid("body", f"not JSON; send {expected}")
    if not isinstance(doc, dict):
        return invalid("body", f"not a JSON object; send {expected}")
    return doc
