"""What route handlers share: the gateway's `State` (reached as `request.app[STATE]`) and the JSON
answers. Routes import this module, app.py imports the routes: no import cycle."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import asyncpg
import orjson
from aiohttp import hdrs, web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.compression_utils import MAX_SYNC_CHUNK_SIZE
from aiohttp.helpers import rfc822_formatted_time
from aiohttp.http import SERVER_SOFTWARE, HttpVersion10, HttpVersion11
from multidict import CIMultiDict

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


class JsonAnswer(web.Response):
    """A JSON answer with a bytes body, written with fewer of aiohttp's coroutines (issue 28: the
    ingest routes' 200). aiohttp's path for a Response is prepare → Response._start →
    StreamResponse._start → _prepare_headers → _prepare_hook → _write_headers → write_headers,
    then write_eof → StreamResponse.write_eof → writer.write_eof, with `isinstance(body, Payload)`
    (an ABC check) on the way. `_start` and `write_eof` below do the same in one coroutine each,
    for what this class is built with (a bytes body; no cookies, compression or chunking, and an
    answer that has a body; anything else takes aiohttp's own path): the same headers in the same
    order (Content-Length, Date, Server, Connection as aiohttp decides them), the same status
    line, the same single write. aiohttp is pinned (pyproject.toml);
    tests/unit/test_gateway_answer_bytes.py compares the bytes on the wire with
    web.Response's for HTTP/1.1 and 1.0, keep-alive and close."""

    async def _start(self, request: web.BaseRequest) -> AbstractStreamWriter:
        body = self._body
        if (
            type(body) is not bytes
            or self._must_be_empty_body
            or self._compression
            or self._chunked
            or self._cookies
            or hdrs.CONTENT_LENGTH in self._headers
        ):
            return await super()._start(request)
        self._req = request
        writer = self._payload_writer = request._payload_writer
        assert writer is not None
        headers = self._headers
        length = len(body)
        headers[hdrs.CONTENT_LENGTH] = str(length)  # Response._start
        # StreamResponse._prepare_headers, for a body of known length
        keep_alive = self._keep_alive
        if keep_alive is None:
            keep_alive = self._keep_alive = request.keep_alive
        version = request.version
        writer.length = length
        if length:
            headers.setdefault(hdrs.CONTENT_TYPE, "application/octet-stream")
        if hdrs.DATE not in headers:
            headers[hdrs.DATE] = rfc822_formatted_time()
        headers.setdefault(hdrs.SERVER, SERVER_SOFTWARE)
        if hdrs.CONNECTION not in headers:
            if keep_alive:
                if version == HttpVersion10:
                    headers[hdrs.CONNECTION] = "keep-alive"
            elif version == HttpVersion11:
                headers[hdrs.CONNECTION] = "close"
        await request._prepare_hook(self)
        # StreamResponse._write_headers
        await writer.write_headers(f"HTTP/{version[0]}.{version[1]} {self._status} {self._reason}", headers)
        return writer

    async def write_eof(self, data: bytes = b"") -> None:
        body = self._body
        writer = self._payload_writer
        if self._eof_sent or type(body) is not bytes or self._must_be_empty_body or self._compressed_body:
            return await super().write_eof(data)
        assert not data, f"data arg is not supported, got {data!r}"
        assert writer is not None, "Response has not been started"
        await writer.write_eof(body)  # Response.write_eof → StreamResponse.write_eof
        self._eof_sent = True
        self._req = None
        self._body_length = writer.output_size
        self._payload_writer = None


def json_answer(status: int, body: object, headers: dict[str, str] | None = None) -> web.Response:
    """json_response's answer as a JsonAnswer, made without web.Response's __init__ (its checks of
    text, charset and content type, then StreamResponse's, cost about 5 µs a request on the bench
    machine): the attributes __init__ sets for these arguments, the same values
    (tests/unit/test_gateway_answer_bytes.py compares them with __init__'s)."""
    answer = _new(JsonAnswer)
    real = CIMultiDict(headers) if headers is not None else CIMultiDict()
    real[hdrs.CONTENT_TYPE] = "application/json"
    answer.__dict__.update(
        _state={},
        _headers=real,
        _status=status,
        _reason=REASON_PHRASES.get(status, ""),
        _body=orjson.dumps(body),
        _compressed_body=None,
        _zlib_executor_size=MAX_SYNC_CHUNK_SIZE,
        _zlib_executor=None,
    )
    return answer


_new = object.__new__
REASON_PHRASES = {s.value: s.phrase for s in HTTPStatus}  # aiohttp's (web_response.py)


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
