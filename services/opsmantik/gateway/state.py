"""What route handlers share: the gateway's `State` (reached as `request.app[STATE]`) and the JSON
answers. Routes import this module, app.py imports the routes: no import cycle."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field

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
OUTCOMES: web.RequestKey[Counter[str]] = web.RequestKey("outcomes", Counter)


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
